/* simple.c: load a model, stream one reply through the on_token callback, print the stop reason
 * and timings. Uses only include/metamorph.h and libmetamorph.
 *
 *   cc -std=c99 -Wall -Wextra -Iinclude examples/c/simple.c -L.build/release -lmetamorph \
 *      -Wl,-rpath,$PWD/.build/release -o simple
 *   ./simple path/to/checkpoint "What is the capital of France?"
 */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "metamorph.h"

/* Called on this thread for each new piece of the reply (whole UTF-8 characters). */
static int32_t on_token(const char *text, size_t len, int32_t token, void *user) {
    (void)token;
    (void)user;
    fwrite(text, 1, len, stdout);
    fflush(stdout);
    return 0; /* non-zero would stop the generation */
}

static const char *stop_reason_name(int32_t reason) {
    switch (reason) {
    case MM_STOP_EOS: return "end of sequence";
    case MM_STOP_MAX_TOKENS: return "max tokens";
    case MM_STOP_STRING: return "stop string";
    case MM_STOP_CANCELLED: return "cancelled";
#ifdef MM_STOP_CONTEXT_FULL
    case MM_STOP_CONTEXT_FULL: return "context full";
#endif
    default: return "unknown";
    }
}

static int failed(const char *what, mm_status status) {
    fprintf(stderr, "\n%s failed: %s: %s\n", what, mm_status_name(status), mm_last_error());
    return 1;
}

int main(int argc, char **argv) {
    mm_model *model = NULL;
    mm_session *session = NULL;
    mm_result *result = NULL;
    mm_model_params model_params;
    mm_session_params session_params;
    mm_gen_params gen;
    mm_prompt_part part;
    mm_timings timings;
    mm_status status;
    int rc = 1;

    if (argc < 3) {
        fprintf(stderr, "usage: %s MODEL_DIR PROMPT\n", argv[0]);
        return 2;
    }

    mm_model_params_init(&model_params);
    status = mm_model_load(argv[1], &model_params, &model);
    if (status != MM_OK) { failed("mm_model_load", status); goto done; }

    mm_session_params_init(&session_params); /* n_ctx 0: the model's default */
    status = mm_session_create(model, &session_params, &session);
    if (status != MM_OK) { failed("mm_session_create", status); goto done; }

    memset(&part, 0, sizeof part);
    part.struct_size = sizeof part;
    part.kind = MM_PART_TEXT;
    part.text = argv[2];
    part.text_len = SIZE_MAX; /* NUL-terminated */

    mm_gen_params_init(&gen); /* greedy by default */
    gen.max_tokens = 128;
    gen.on_token = on_token;

    status = mm_generate(session, &part, 1, &gen, &result);
    if (status != MM_OK) { failed("mm_generate", status); goto done; }

    timings.struct_size = sizeof timings;
    status = mm_result_timings(result, &timings);
    if (status != MM_OK) { failed("mm_result_timings", status); goto done; }

    printf("\n\n[stop: %s]\n", stop_reason_name(mm_result_stop_reason(result)));
    printf("[prompt: %d tokens in %.1f ms | reply: %d tokens in %.1f ms, %.1f tokens/s | load %.1f ms]\n",
           timings.n_prompt_tokens, timings.prompt_ms, timings.n_generated, timings.generate_ms,
           timings.generate_ms > 0 ? timings.n_generated * 1000.0 / timings.generate_ms : 0.0, timings.load_ms);
    rc = 0;

done:
    mm_result_free(result);   /* NULL is allowed for every free function */
    mm_session_free(session); /* sessions before their model */
    mm_model_free(model);
    return rc;
}
