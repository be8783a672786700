/*
 * qkernels C API example: pack a conv2d, run it, add two quantized tensors, show error
 * handling, then load the digits ResNet-18 and classify one image.
 *
 *   usage: c-example MODEL.safetensors INPUT.f32
 *
 * INPUT.f32 holds one image as the model expects it: 1 x C x H x W native-endian floats,
 * already resized and normalised (scripts/test-c-example.sh writes one from the scikit-learn
 * digits test set). Every checked output line is compared byte for byte with the values the
 * Rust reference computes (examples/c/expected.rs); lines starting with '#' are commentary.
 *
 * Build (see examples/c/Makefile):
 *   cargo build --release --lib
 *   cc -std=c11 -O2 -Iinclude examples/c/main.c target/release/libqkernels.a \
 *      -lpthread -ldl -lm -o c-example
 */
#include <stdio.h>
#include <stdlib.h>

#include "qkernels.h"

/* Every fallible call returns a qk_status; on failure qk_last_error() says why. */
#define CHECK(call)                                                                  \
    do {                                                                             \
        qk_status check_status_ = (call);                                            \
        if (check_status_ != QK_OK) {                                                \
            fprintf(stderr, "%s:%d: %s failed with status %d: %s\n", __FILE__,        \
                    __LINE__, #call, (int)check_status_, qk_last_error());           \
            exit(1);                                                                 \
        }                                                                            \
    } while (0)

static void print_u8(const char *title, const uint8_t *v, size_t n) {
    printf("%s:", title);
    for (size_t i = 0; i < n; i++) {
        printf("%s%u", i % 24 == 0 ? "\n  " : " ", (unsigned)v[i]);
    }
    printf("\n");
}

static void *xmalloc(size_t bytes) {
    void *p = malloc(bytes);
    if (p == NULL) {
        fprintf(stderr, "out of memory\n");
        exit(1);
    }
    return p;
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: %s MODEL.safetensors INPUT.f32\n", argv[0]);
        return 2;
    }
    printf("qkernels %s, isa %s\n", qk_version(), qk_isa());

    /* ---- 1. A quantized conv2d: 8 -> 4 channels, 3x3, stride 1, padding 1, fused ReLU ---- */
    enum { N = 1, H = 6, W = 6, IC = 8, OC = 4, K = 3 };
    static uint8_t x[N * H * W * IC]; /* NHWC activations */
    static int8_t w[OC * IC * K * K]; /* OIHW weights, as PyTorch stores them */
    for (size_t i = 0; i < sizeof x; i++) x[i] = (uint8_t)((i * 37 + 11) % 256);
    for (size_t i = 0; i < sizeof w; i++) w[i] = (int8_t)((int)((i * 29 + 5) % 15) - 7);
    const double w_scales[OC] = {0.002, 0.0025, 0.003, 0.0035}; /* per output channel */
    const int32_t w_zero_points[OC] = {0, 0, 0, 0};
    const float bias[OC] = {0.5f, -1.25f, 2.0f, 0.0f};
    const qk_conv2d_desc desc = {
        .in_channels = IC, .out_channels = OC, .kernel_h = K, .kernel_w = K,
        .stride_h = 1, .stride_w = 1, .pad_h = 1, .pad_w = 1,
        .dilation_h = 1, .dilation_w = 1, .groups = 1,
    };
    qk_weights *conv = NULL;
    CHECK(qk_weights_pack_conv2d(&desc, w, w_scales, w_zero_points, OC, bias, &conv));
    /* The inputs were copied: w, w_scales, ... could be freed now. */

    size_t oh = 0, ow = 0;
    CHECK(qk_conv2d_output_size(conv, H, W, &oh, &ow));
    const size_t y_len = N * oh * ow * OC;
    uint8_t *y = xmalloc(y_len);
    const qk_qparams qx = {.scale = 0.05, .zero_point = 3};
    const qk_qparams qy = {.scale = 0.1, .zero_point = 128};
    CHECK(qk_conv2d_u8(conv, x, N, H, W, qx, qy, true, y, y_len));
    printf("conv2d+relu output [%d, %zu, %zu, %d] NHWC", N, oh, ow, OC);
    print_u8("", y, y_len);
    qk_weights_free(conv); /* freeing NULL would be a no-op */

    /* ---- 2. quantized::add of the conv output and another tensor ---- */
    uint8_t *b = xmalloc(y_len), *sum = xmalloc(y_len);
    for (size_t i = 0; i < y_len; i++) b[i] = (uint8_t)((i * 53 + 7) % 256);
    const qk_qparams qb = {.scale = 0.08, .zero_point = 120};
    const qk_qparams qsum = {.scale = 0.15, .zero_point = 64};
    CHECK(qk_add_u8(y, qy, b, qb, y_len, qsum, false, sum));
    print_u8("add output", sum, y_len);

    /* ---- 3. Errors are statuses plus a per-thread message, never a crash ---- */
    qk_status s = qk_conv2d_u8(NULL, x, N, H, W, qx, qy, true, y, y_len);
    printf("error demo: NULL weights -> status %d\n", (int)s);
    printf("# message: %s\n", qk_last_error());
    const qk_qparams bad = {.scale = 0.0, .zero_point = 0};
    s = qk_add_u8(y, bad, b, qb, y_len, qsum, false, sum);
    printf("error demo: scale 0 -> status %d\n", (int)s);
    printf("# message: %s\n", qk_last_error());
    s = qk_add_u8(y, qy, b, qb, y_len, qsum, false, sum);
    printf("error demo: the next good call -> status %d\n", (int)s);
    free(y);
    free(b);
    free(sum);

    /* ---- 4. The digits ResNet-18: load, run one image, classify ---- */
    qk_model *model = NULL;
    CHECK(qk_model_load(argv[1], &model));
    const size_t classes = qk_model_num_classes(model);
    const size_t channels = qk_model_input_channels(model);
    size_t ih = 0, iw = 0;
    CHECK(qk_model_input_size(model, &ih, &iw));
    printf("model: %zu classes, input [1, %zu, %zu, %zu]\n", classes, channels, ih, iw);

    const size_t in_len = channels * ih * iw;
    float *input = xmalloc(in_len * sizeof *input);
    FILE *f = fopen(argv[2], "rb");
    if (f == NULL || fread(input, sizeof *input, in_len, f) != in_len || fgetc(f) != EOF) {
        fprintf(stderr, "%s: expected exactly %zu floats\n", argv[2], in_len);
        return 1;
    }
    fclose(f);

    float *logits = xmalloc(classes * sizeof *logits);
    uint8_t *logits_q = xmalloc(classes);
    CHECK(qk_model_run(model, input, 1, ih, iw, logits, classes));
    CHECK(qk_model_run_quantized(model, input, 1, ih, iw, logits_q, classes));
    print_u8("logits (uint8)", logits_q, classes);
    printf("logits (float bits):");
    size_t best = 0;
    for (size_t i = 0; i < classes; i++) {
        union { float f; uint32_t u; } bits = {.f = logits[i]};
        printf(" %08x", (unsigned)bits.u);
        if (logits[i] > logits[best]) best = i;
    }
    printf("\n# logits:");
    for (size_t i = 0; i < classes; i++) printf(" %.4f", logits[i]);
    printf("\nprediction: %zu\n", best);

    free(input);
    free(logits);
    free(logits_q);
    qk_model_free(model);
    return 0;
}
