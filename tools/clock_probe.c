/* Core clock and VNNI throughput probe (x86-64, gcc/clang, AVX-512 VNNI CPU).
 *
 *   gcc -O2 -o /tmp/clock_probe tools/clock_probe.c && /tmp/clock_probe
 *
 * Clock: a chain of dependent 1-cycle `add`s (4 per loop iteration), timed with the thread's CPU
 * clock, so time spent descheduled on a loaded machine does not count. VNNI: 12 independent
 * accumulators of zmm `vpdpbusd` (64 u8*s8 MACs each), register-only. Their ratio is the MAC/cycle
 * the core sustains (128 on the Zen 5 of docs/performance.md). Used by docs/performance.md. */
#include <stdio.h>
#include <time.h>
#include <immintrin.h>
static double now(){struct timespec t;clock_gettime(CLOCK_THREAD_CPUTIME_ID,&t);return t.tv_sec+t.tv_nsec*1e-9;}
__attribute__((target("avx512f,avx512vnni,avx512bw")))
double vnni(long n){
  __m512i a0=_mm512_setzero_si512(),a1=_mm512_setzero_si512(),a2=_mm512_setzero_si512(),a3=_mm512_setzero_si512(),a4=_mm512_setzero_si512(),a5=_mm512_setzero_si512(),a6=_mm512_setzero_si512(),a7=_mm512_setzero_si512(),a8=_mm512_setzero_si512(),a9=_mm512_setzero_si512(),a10=_mm512_setzero_si512(),a11=_mm512_setzero_si512(); __m512i x=_mm512_set1_epi8(3), y=_mm512_set1_epi8(5);
  double t=now();
  for(long i=0;i<n;i++){a0=_mm512_dpbusd_epi32(a0,x,y);a1=_mm512_dpbusd_epi32(a1,x,y);a2=_mm512_dpbusd_epi32(a2,x,y);a3=_mm512_dpbusd_epi32(a3,x,y);a4=_mm512_dpbusd_epi32(a4,x,y);a5=_mm512_dpbusd_epi32(a5,x,y);a6=_mm512_dpbusd_epi32(a6,x,y);a7=_mm512_dpbusd_epi32(a7,x,y);a8=_mm512_dpbusd_epi32(a8,x,y);a9=_mm512_dpbusd_epi32(a9,x,y);a10=_mm512_dpbusd_epi32(a10,x,y);a11=_mm512_dpbusd_epi32(a11,x,y);__asm__ volatile("":"+v"(a0),"+v"(a1),"+v"(a2),"+v"(a3),"+v"(a4),"+v"(a5),"+v"(a6),"+v"(a7),"+v"(a8),"+v"(a9),"+v"(a10),"+v"(a11));}
  t=now()-t; int s=_mm512_reduce_add_epi32(a0)+_mm512_reduce_add_epi32(a1)+_mm512_reduce_add_epi32(a2)+_mm512_reduce_add_epi32(a3)+_mm512_reduce_add_epi32(a4)+_mm512_reduce_add_epi32(a5)+_mm512_reduce_add_epi32(a6)+_mm512_reduce_add_epi32(a7)+_mm512_reduce_add_epi32(a8)+_mm512_reduce_add_epi32(a9)+_mm512_reduce_add_epi32(a10)+_mm512_reduce_add_epi32(a11); if(s==1) printf("x");
  return n*12.0*64/t; // MAC per second
}
int main(){
  for(int r=0;r<5;r++){
  long n=400000000; double t=now();
  __asm__ volatile("mov %0, %%rcx\n1: add $1, %%rax\n add $1, %%rax\n add $1, %%rax\n add $1, %%rax\n sub $1, %%rcx\n jnz 1b" :: "r"(n):"rax","rcx");
  t=now()-t; double ghz=4.0*n/t/1e9;
  double m=vnni(100000000);
  printf("dep-add clock %.2f GHz | vnni zmm %.1f GMAC/s = %.1f MAC/cycle at that clock\n", ghz, m/1e9, m/1e9/ghz);
  }
}
