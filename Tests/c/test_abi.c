/* test_abi.c: the C contract of include/metamorph.h, single-threaded.
 *   test_abi MODEL_DIR      (a tiny checkpoint with tokenizer.json, e.g. mm-f32)
 * Bad input must never crash: NULL and freed handles, NULL outputs, short buffers, invalid
 * UTF-8, bad struct sizes. Prints one line per check and "# N passed, M failed". */
#define _POSIX_C_SOURCE 199309L /* nanosleep */
#define MM_TEST_NO_THREADS
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "metamorph.h"
#include "check.h"

static const char *model_dir;

/* ---------------------------------------------------------------------------------------- */

static void test_library(void) {
    char want[64];
    const char *names[] = {"MM_OK", "MM_ERR_INVALID_ARGUMENT", "MM_ERR_IO", "MM_ERR_FORMAT", "MM_ERR_UNSUPPORTED",
                           "MM_ERR_OUT_OF_MEMORY", "MM_ERR_CONTEXT_FULL", "MM_ERR_CANCELLED", "MM_ERR_BUSY",
                           "MM_ERR_BUFFER_TOO_SMALL", "MM_ERR_INVALID_UTF8", "MM_ERR_OUT_OF_RANGE",
                           "MM_ERR_INTERNAL", "MM_ERR_ABI_MISMATCH"};
    const int codes[] = {MM_OK, MM_ERR_INVALID_ARGUMENT, MM_ERR_IO, MM_ERR_FORMAT, MM_ERR_UNSUPPORTED,
                         MM_ERR_OUT_OF_MEMORY, MM_ERR_CONTEXT_FULL, MM_ERR_CANCELLED, MM_ERR_BUSY,
                         MM_ERR_BUFFER_TOO_SMALL, MM_ERR_INVALID_UTF8, MM_ERR_OUT_OF_RANGE, MM_ERR_INTERNAL,
                         MM_ERR_ABI_MISMATCH};
    size_t i;
    CHECK(mm_last_error() != NULL && mm_last_error()[0] == '\0', "mm_last_error() is \"\" before any failure");
    CHECK(mm_abi_version() == MM_ABI_VERSION, "mm_abi_version() == MM_ABI_VERSION (%u)", (unsigned)mm_abi_version());
    snprintf(want, sizeof want, "%d.%d.%d", MM_VERSION_MAJOR, MM_VERSION_MINOR, MM_VERSION_PATCH);
    CHECK(mm_version_string() && strcmp(mm_version_string(), want) == 0, "mm_version_string() == \"%s\"", want);
    for (i = 0; i < sizeof codes / sizeof codes[0]; i++)
        CHECK(strcmp(mm_status_name(codes[i]), names[i]) == 0, "mm_status_name(%d) == %s", codes[i], names[i]);
    CHECK(mm_status_name(-1) != NULL && mm_status_name(1000) != NULL, "mm_status_name of unknown codes is not NULL");

    CHECK(mm_struct_size(MM_STRUCT_MODEL_PARAMS) == sizeof(mm_model_params), "struct size mm_model_params = %zu",
          sizeof(mm_model_params));
    CHECK(mm_struct_size(MM_STRUCT_SESSION_PARAMS) == sizeof(mm_session_params), "struct size mm_session_params = %zu",
          sizeof(mm_session_params));
    CHECK(mm_struct_size(MM_STRUCT_GEN_PARAMS) == sizeof(mm_gen_params), "struct size mm_gen_params = %zu",
          sizeof(mm_gen_params));
    CHECK(mm_struct_size(MM_STRUCT_PROMPT_PART) == sizeof(mm_prompt_part), "struct size mm_prompt_part = %zu",
          sizeof(mm_prompt_part));
    CHECK(mm_struct_size(MM_STRUCT_IMAGE) == sizeof(mm_image), "struct size mm_image = %zu", sizeof(mm_image));
    CHECK(mm_struct_size(MM_STRUCT_TIMINGS) == sizeof(mm_timings), "struct size mm_timings = %zu", sizeof(mm_timings));
    CHECK(mm_struct_size(MM_STRUCT_MEMORY_FILE) == sizeof(mm_memory_file), "struct size mm_memory_file = %zu",
          sizeof(mm_memory_file));
    CHECK(mm_struct_size(0) == 0 && mm_struct_size(99) == 0 && mm_struct_size(-1) == 0,
          "mm_struct_size of unknown kinds is 0");

    mm_set_default_threads(3);
    CHECK(mm_get_default_threads() == 3, "mm_set_default_threads(3) sticks");
    mm_set_default_threads(0);
    CHECK(mm_get_default_threads() >= 1, "mm_set_default_threads(0) restores a default >= 1");
    mm_set_log_callback(NULL, NULL, MM_LOG_DEBUG);
}

static void test_params_init(void) {
    mm_model_params mp;
    mm_session_params sp;
    mm_gen_params gp;
    memset(&mp, 0xAB, sizeof mp);
    memset(&sp, 0xAB, sizeof sp);
    memset(&gp, 0xAB, sizeof gp);
    mm_model_params_init(&mp);
    mm_session_params_init(&sp);
    mm_gen_params_init(&gp);
    CHECK(mp.struct_size == sizeof mp && mp.use_mmap == 1 && mp.n_threads == 0 && mp.require_tokenizer == 0 &&
          mp.vision_tower_path == NULL && mp.tokenizer_path == NULL, "mm_model_params_init defaults");
    CHECK(sp.struct_size == sizeof sp && sp.n_ctx == 0 && sp.n_threads == 0, "mm_session_params_init defaults");
    CHECK(gp.struct_size == sizeof gp && gp.max_tokens > 0 && gp.temperature == 0.0f && gp.top_k == 0 &&
          gp.top_p == 1.0f && gp.min_p == 0.0f && gp.repeat_penalty == 1.0f && gp.repeat_last_n == 64 &&
          gp.seed == MM_SEED_RANDOM && gp.raw == 0 && gp.keep_logits == 0 && gp.assistant_prefix == NULL &&
          gp.stop_strings == NULL && gp.n_stop_strings == 0 && gp.on_token == NULL && gp.user == NULL,
          "mm_gen_params_init defaults");
    mm_model_params_init(NULL);
    mm_session_params_init(NULL);
    mm_gen_params_init(NULL);
    CHECK(1, "*_params_init(NULL) does not crash");
}

static void test_null_handles(void) {
    mm_model *m = (mm_model *)1;
    mm_session *s = (mm_session *)1;
    mm_tokenizer *t = (mm_tokenizer *)1;
    mm_result *r = NULL;
    mm_job *j = NULL;
    mm_prompt_part part;
    int32_t id = 7, ids[4];
    size_t n = 99;
    char buf[16];
    mm_timings tm;

    memset(&part, 0, sizeof part);
    part.struct_size = sizeof part;
    part.kind = MM_PART_TEXT;
    part.text = "hi";
    part.text_len = 2;

    mm_model_free(NULL);
    mm_session_free(NULL);
    mm_tokenizer_free(NULL);
    mm_result_free(NULL);
    mm_job_free(NULL);
    CHECK(1, "every *_free(NULL) is a no-op");

    CHECK_STATUS(mm_model_load(NULL, NULL, &m), MM_ERR_INVALID_ARGUMENT, "mm_model_load(NULL path)");
    CHECK(m == NULL, "a failed mm_model_load sets *out to NULL");
    CHECK_STATUS(mm_model_load("/nonexistent/metamorph-model", NULL, &m), MM_ERR_IO, "mm_model_load(missing dir)");
    CHECK(mm_last_error()[0] != '\0', "the IO error has a message: %s", mm_last_error());
    CHECK_STATUS(mm_model_load(model_dir, NULL, NULL), MM_ERR_INVALID_ARGUMENT, "mm_model_load(out NULL)");
    CHECK_STATUS(mm_model_load_from_memory(NULL, 0, MM_MEMORY_COPY, NULL, &m), MM_ERR_INVALID_ARGUMENT,
                 "mm_model_load_from_memory(no files)");
    CHECK_STATUS(mm_tokenizer_load(NULL, &t), MM_ERR_INVALID_ARGUMENT, "mm_tokenizer_load(NULL)");
    CHECK_STATUS(mm_tokenizer_load_from_memory(NULL, 10, &t), MM_ERR_INVALID_ARGUMENT,
                 "mm_tokenizer_load_from_memory(NULL)");
    CHECK_STATUS(mm_tokenizer_load_from_memory("{", 1, &t), MM_ERR_FORMAT, "mm_tokenizer_load_from_memory(\"{\")");

    CHECK_STATUS(mm_tokenize(NULL, "hi", 2, 0, ids, 4, &n), MM_ERR_INVALID_ARGUMENT, "mm_tokenize(NULL tokenizer)");
    CHECK_STATUS(mm_detokenize(NULL, ids, 0, 0, buf, sizeof buf, &n), MM_ERR_INVALID_ARGUMENT,
                 "mm_detokenize(NULL tokenizer)");
    CHECK_STATUS(mm_token_to_piece(NULL, 0, buf, sizeof buf, &n), MM_ERR_INVALID_ARGUMENT, "mm_token_to_piece(NULL)");
    CHECK_STATUS(mm_token_special(NULL, MM_TOKEN_BOS, &id), MM_ERR_INVALID_ARGUMENT, "mm_token_special(NULL)");
    CHECK_STATUS(mm_token_lookup(NULL, "a", 1, &id), MM_ERR_INVALID_ARGUMENT, "mm_token_lookup(NULL)");
    CHECK(mm_vocab_size(NULL) == -1, "mm_vocab_size(NULL) == -1");
    CHECK(mm_token_is_special(NULL, 0) == -1, "mm_token_is_special(NULL) == -1");

    CHECK(mm_model_tokenizer(NULL) == NULL, "mm_model_tokenizer(NULL) == NULL");
    CHECK(mm_model_info(NULL, MM_MODEL_INFO_VOCAB_SIZE) == -1, "mm_model_info(NULL) == -1");
    (void)mm_model_type(NULL);
    CHECK(1, "mm_model_type(NULL) does not crash");

    s = (mm_session *)1;
    CHECK_STATUS(mm_session_create(NULL, NULL, &s), MM_ERR_INVALID_ARGUMENT, "mm_session_create(NULL model)");
    CHECK(s == NULL, "a failed mm_session_create sets *out to NULL");
    CHECK_STATUS(mm_session_reset(NULL), MM_ERR_INVALID_ARGUMENT, "mm_session_reset(NULL)");
    CHECK_STATUS(mm_session_cancel(NULL), MM_ERR_INVALID_ARGUMENT, "mm_session_cancel(NULL)");
    CHECK_STATUS(mm_session_set_threads(NULL, 1), MM_ERR_INVALID_ARGUMENT, "mm_session_set_threads(NULL)");
    (void)mm_session_n_past(NULL);
    CHECK(1, "mm_session_n_past(NULL) does not crash");
    CHECK_STATUS(mm_generate(NULL, &part, 1, NULL, &r), MM_ERR_INVALID_ARGUMENT, "mm_generate(NULL session)");
    CHECK(r == NULL, "a failed mm_generate leaves *out NULL");
    CHECK_STATUS(mm_job_start(NULL, &part, 1, NULL, &j), MM_ERR_INVALID_ARGUMENT, "mm_job_start(NULL session)");

    CHECK(mm_result_text(NULL) == NULL, "mm_result_text(NULL) == NULL");
    n = 5;
    CHECK(mm_result_tokens(NULL, &n) == NULL && n == 0, "mm_result_tokens(NULL) == NULL, n = 0");
    CHECK(mm_result_prompt_tokens(NULL, NULL) == NULL, "mm_result_prompt_tokens(NULL, NULL) == NULL");
    CHECK(mm_result_logits(NULL, &n) == NULL, "mm_result_logits(NULL) == NULL");
    (void)mm_result_stop_reason(NULL);
    (void)mm_result_seed(NULL);
    (void)mm_result_n_images(NULL);
    tm.struct_size = sizeof tm;
    CHECK_STATUS(mm_result_timings(NULL, &tm), MM_ERR_INVALID_ARGUMENT, "mm_result_timings(NULL)");
    CHECK_STATUS(mm_result_image_tokens(NULL, 0, NULL, 0, NULL, NULL, NULL), MM_ERR_INVALID_ARGUMENT,
                 "mm_result_image_tokens(NULL)");
    (void)mm_job_poll(NULL, buf, sizeof buf, &n);
    CHECK(n == 0, "mm_job_poll(NULL) does not crash and reports 0 bytes");
    CHECK_STATUS(mm_job_cancel(NULL), MM_ERR_INVALID_ARGUMENT, "mm_job_cancel(NULL)");
    CHECK_STATUS(mm_job_wait(NULL, &r), MM_ERR_INVALID_ARGUMENT, "mm_job_wait(NULL)");
}

/* ---------------------------------------------------------------------------------------- */

static void test_tokenizer(const mm_tokenizer *tok) {
    const char *text = "Hello world";
    const int32_t want[] = {128000, 9906, 1917};
    int32_t ids[8], id = 0;
    size_t n = 0, nb = 0;
    char buf[32];
    mm_status st;

    CHECK(mm_vocab_size(tok) == 128258, "vocab size 128258 (got %d)", mm_vocab_size(tok));
    st = mm_tokenize(tok, text, strlen(text), MM_TOKENIZE_ADD_BOS, NULL, 0, &n);
    CHECK(st == MM_ERR_BUFFER_TOO_SMALL && n == 3, "tokenize with capacity 0: BUFFER_TOO_SMALL, 3 needed (%s, %zu)",
          mm_status_name(st), n);
    n = 0;
    st = mm_tokenize(tok, text, strlen(text), MM_TOKENIZE_ADD_BOS, ids, 2, &n);
    CHECK(st == MM_ERR_BUFFER_TOO_SMALL && n == 3, "tokenize with capacity 2: BUFFER_TOO_SMALL, 3 needed");
    st = mm_tokenize(tok, text, strlen(text), MM_TOKENIZE_ADD_BOS, ids, 3, &n);
    CHECK(st == MM_OK && n == 3 && memcmp(ids, want, sizeof want) == 0, "tokenize \"Hello world\" = 128000 9906 1917");
    st = mm_tokenize(tok, text, strlen(text), 0, ids, 8, &n);
    CHECK(st == MM_OK && n == 2 && ids[0] == 9906, "tokenize without ADD_BOS");
    st = mm_tokenize(tok, "", 0, 0, NULL, 0, &n);
    CHECK(st == MM_OK && n == 0, "tokenize \"\" with capacity 0 is MM_OK, 0 tokens");
    st = mm_tokenize(tok, "x<|eot_id|>", 11, 0, ids, 8, &n);
    CHECK(st == MM_OK && n == 2 && ids[1] == 128009, "special-token text is matched");

    st = mm_detokenize(tok, want + 1, 2, 0, NULL, 0, &nb);
    CHECK(st == MM_ERR_BUFFER_TOO_SMALL && nb == 11, "detokenize with capacity 0: 11 bytes needed (%zu)", nb);
    memset(buf, '#', sizeof buf);
    st = mm_detokenize(tok, want + 1, 2, 0, buf, 11, &nb);
    CHECK(st == MM_OK && nb == 11 && memcmp(buf, text, 11) == 0 && buf[11] == '#',
          "detokenize into exactly 11 bytes: text, no NUL");
    st = mm_detokenize(tok, want + 1, 2, 0, buf, sizeof buf, &nb);
    CHECK(st == MM_OK && buf[11] == '\0', "detokenize with room: NUL-terminated");
    st = mm_detokenize(tok, want, 3, 0, buf, sizeof buf, &nb);
    CHECK(st == MM_OK && strcmp(buf, "<|begin_of_text|>Hello world") == 0, "detokenize keeps specials by default");
    st = mm_detokenize(tok, want, 3, MM_DETOKENIZE_SKIP_SPECIAL, buf, sizeof buf, &nb);
    CHECK(st == MM_OK && strcmp(buf, "Hello world") == 0, "MM_DETOKENIZE_SKIP_SPECIAL drops them");
    st = mm_detokenize(tok, NULL, 0, 0, buf, sizeof buf, &nb);
    CHECK(st == MM_OK && nb == 0 && buf[0] == '\0', "detokenize of 0 ids is \"\"");

    st = mm_token_to_piece(tok, 9906, NULL, 0, &nb);
    CHECK(st == MM_ERR_BUFFER_TOO_SMALL && nb == 5, "token_to_piece capacity 0: 5 bytes needed");
    st = mm_token_to_piece(tok, 9906, buf, 5, &nb);
    CHECK(st == MM_OK && nb == 5 && memcmp(buf, "Hello", 5) == 0, "token_to_piece(9906) = Hello");

    id = 0;
    CHECK(mm_token_special(tok, MM_TOKEN_BOS, &id) == MM_OK && id == 128000, "BOS = 128000");
    CHECK(mm_token_special(tok, MM_TOKEN_EOT, &id) == MM_OK && id == 128009, "EOT = 128009");
    CHECK(mm_token_special(tok, MM_TOKEN_EOS, &id) == MM_OK && id == 128001, "EOS = 128001");
    CHECK(mm_token_special(tok, MM_TOKEN_IMAGE_START, &id) == MM_OK && id == 128256, "<image_start> = 128256");
    CHECK(mm_token_special(tok, MM_TOKEN_IMAGE_END, &id) == MM_OK && id == 128257, "<image_end> = 128257");
    CHECK(mm_token_special(tok, 77, &id) != MM_OK, "an unknown special kind fails");
    CHECK_STATUS(mm_token_special(tok, MM_TOKEN_BOS, NULL), MM_ERR_INVALID_ARGUMENT, "mm_token_special(id NULL)");
    CHECK(mm_token_lookup(tok, "<|eot_id|>", 10, &id) == MM_OK && id == 128009, "lookup <|eot_id|>");
    CHECK_STATUS(mm_token_lookup(tok, "not a single token", 18, &id), MM_ERR_OUT_OF_RANGE, "lookup of a non-token");
    CHECK(mm_token_is_special(tok, 128000) == 1 && mm_token_is_special(tok, 9906) == 0, "is_special");
    CHECK(mm_token_is_special(tok, -1) == -1 && mm_token_is_special(tok, 128258) == -1, "is_special out of range: -1");

    /* invalid UTF-8 */
    CHECK_STATUS(mm_tokenize(tok, "abc\xff", 4, 0, ids, 8, &n), MM_ERR_INVALID_UTF8, "tokenize \"abc\\xff\"");
    CHECK(strstr(mm_last_error(), "3") != NULL, "the message gives the byte offset: %s", mm_last_error());
    CHECK_STATUS(mm_tokenize(tok, "\xc3", 1, 0, ids, 8, &n), MM_ERR_INVALID_UTF8, "tokenize a truncated sequence");
    CHECK_STATUS(mm_tokenize(tok, "\xed\xa0\x80", 3, 0, ids, 8, &n), MM_ERR_INVALID_UTF8, "tokenize a surrogate");
    CHECK_STATUS(mm_tokenize(tok, "\xc0\xaf", 2, 0, ids, 8, &n), MM_ERR_INVALID_UTF8, "tokenize an overlong form");
    CHECK_STATUS(mm_token_lookup(tok, "\xff", 1, &id), MM_ERR_INVALID_UTF8, "lookup of invalid UTF-8");
    CHECK_STATUS(mm_tokenize(tok, "ok\0ok", 5, 0, ids, 8, &n), MM_OK, "an embedded NUL is text, not an end");

    /* out of range */
    ids[0] = 9906;
    ids[1] = 128258;
    CHECK_STATUS(mm_detokenize(tok, ids, 2, 0, buf, sizeof buf, &nb), MM_ERR_OUT_OF_RANGE, "detokenize id 128258");
    CHECK(strstr(mm_last_error(), "128258") != NULL, "the message names the id: %s", mm_last_error());
    ids[1] = -5;
    CHECK_STATUS(mm_detokenize(tok, ids, 2, 0, buf, sizeof buf, &nb), MM_ERR_OUT_OF_RANGE, "detokenize id -5");
    CHECK_STATUS(mm_token_to_piece(tok, 1 << 30, buf, sizeof buf, &nb), MM_ERR_OUT_OF_RANGE, "token_to_piece(2^30)");
    CHECK_STATUS(mm_tokenize(tok, NULL, 3, 0, ids, 8, &n), MM_ERR_INVALID_ARGUMENT, "tokenize(text NULL, len 3)");

    mm_tokenizer_free((mm_tokenizer *)tok); /* a model's tokenizer: refused, stays usable */
    CHECK(mm_vocab_size(tok) == 128258, "mm_tokenizer_free on a model's tokenizer is refused");
}

/* ---------------------------------------------------------------------------------------- */

struct collect {
    char text[4096];
    size_t len;
    int calls;
    int stop_after;
};

static int32_t collect_cb(const char *text, size_t len, int32_t token, void *user) {
    struct collect *c = (struct collect *)user;
    (void)token;
    if (c->len + len < sizeof c->text) {
        memcpy(c->text + c->len, text, len);
        c->len += len;
        c->text[c->len] = '\0';
    }
    c->calls++;
    return c->stop_after > 0 && c->calls >= c->stop_after;
}

static mm_prompt_part text_part(const char *s) {
    mm_prompt_part p;
    memset(&p, 0, sizeof p);
    p.struct_size = sizeof p;
    p.kind = MM_PART_TEXT;
    p.text = s;
    p.text_len = SIZE_MAX;
    return p;
}

static void test_generation(mm_model *model) {
    mm_session *s = NULL, *small = NULL;
    mm_result *r = NULL;
    mm_job *job = NULL, *job2 = NULL;
    mm_session_params sp;
    mm_gen_params gp;
    mm_prompt_part part = text_part("Hello world"), parts[2];
    mm_image img;
    mm_timings tm;
    struct collect col;
    const int32_t *toks;
    size_t n = 0, got = 0;
    char buf[64];
    const char *stops[1];
    uint8_t pixels[2 * 2 * 3];
    unsigned char guard[sizeof(mm_timings)];
    int32_t stop;
    int64_t past;
    int i;

    CHECK_STATUS(mm_session_create(model, NULL, &s), MM_OK, "mm_session_create(model, NULL params)");
    if (!s) return;

    mm_gen_params_init(&gp);
    gp.raw = 1;
    gp.max_tokens = 6;
    gp.on_token = collect_cb;
    memset(&col, 0, sizeof col);
    gp.user = &col;
    CHECK_STATUS(mm_generate(s, &part, 1, &gp, &r), MM_OK, "mm_generate raw \"Hello world\"");
    if (r) {
        toks = mm_result_tokens(r, &n);
        CHECK(toks != NULL && n >= 1 && n <= 6, "the result has 1..6 tokens (%zu)", n);
        CHECK(mm_result_text(r) && strcmp(mm_result_text(r), col.text) == 0,
              "the streamed text equals mm_result_text");
        stop = mm_result_stop_reason(r);
        CHECK(stop == MM_STOP_MAX_TOKENS || stop == MM_STOP_EOS, "stop reason %d is MAX_TOKENS or EOS", stop);
        toks = mm_result_prompt_tokens(r, &n);
        CHECK(n == 3 && toks[0] == 128000 && toks[1] == 9906 && toks[2] == 1917, "prompt tokens BOS Hello world");
        CHECK(mm_result_logits(r, &n) == NULL, "no logits unless keep_logits");
        CHECK(mm_result_n_images(r) == 0, "a text result has 0 images");
        CHECK_STATUS(mm_result_image_tokens(r, 0, NULL, 0, NULL, NULL, NULL), MM_ERR_OUT_OF_RANGE,
                     "mm_result_image_tokens(0) of a text result");
        tm.struct_size = sizeof tm;
        CHECK_STATUS(mm_result_timings(r, &tm), MM_OK, "mm_result_timings");
        CHECK(tm.n_prompt_tokens == 3 && tm.n_generated >= 1 && tm.prompt_ms >= 0 && tm.generate_ms >= 0,
              "timings: 3 prompt positions, %d generated", tm.n_generated);
        /* an older, shorter mm_timings: nothing written past its struct_size */
        memset(guard, 0xEE, sizeof guard);
        ((mm_timings *)(void *)guard)->struct_size = (uint32_t)offsetof(mm_timings, pad0);
        CHECK_STATUS(mm_result_timings(r, (mm_timings *)(void *)guard), MM_OK, "mm_result_timings, short struct");
        CHECK(guard[offsetof(mm_timings, pad0)] == 0xEE && guard[sizeof guard - 1] == 0xEE,
              "a short mm_timings is written only up to its struct_size");
        tm.struct_size = 0;
        CHECK_STATUS(mm_result_timings(r, &tm), MM_ERR_ABI_MISMATCH, "mm_result_timings, struct_size 0");
        mm_result_free(r);
        /* freed handles */
        CHECK(mm_result_text(r) == NULL, "mm_result_text of a freed result is NULL");
        CHECK(mm_result_tokens(r, &n) == NULL && n == 0, "mm_result_tokens of a freed result is NULL");
        mm_result_free(r);
        CHECK(1, "a second mm_result_free is harmless");
        r = NULL;
    }

    /* parameter and prompt errors */
    gp.on_token = NULL;
    gp.max_tokens = 0;
    CHECK_STATUS(mm_generate(s, &part, 1, &gp, &r), MM_ERR_INVALID_ARGUMENT, "max_tokens 0");
    gp.max_tokens = 4;
    CHECK_STATUS(mm_generate(s, &part, 0, &gp, &r), MM_ERR_INVALID_ARGUMENT, "0 parts");
    CHECK_STATUS(mm_generate(s, NULL, 1, &gp, &r), MM_ERR_INVALID_ARGUMENT, "parts NULL");
    CHECK_STATUS(mm_generate(s, &part, 1, &gp, NULL), MM_ERR_INVALID_ARGUMENT, "out NULL");
    gp.struct_size = 0;
    CHECK_STATUS(mm_generate(s, &part, 1, &gp, &r), MM_ERR_ABI_MISMATCH, "mm_gen_params.struct_size 0");
    gp.struct_size = sizeof gp;
    parts[0] = text_part("bad \xfe text");
    CHECK_STATUS(mm_generate(s, parts, 1, &gp, &r), MM_ERR_INVALID_UTF8, "invalid UTF-8 text part");
    stops[0] = "\xff";
    gp.stop_strings = stops;
    gp.n_stop_strings = 1;
    CHECK_STATUS(mm_generate(s, &part, 1, &gp, &r), MM_ERR_INVALID_UTF8, "invalid UTF-8 stop string");
    gp.stop_strings = NULL;
    CHECK_STATUS(mm_generate(s, &part, 1, &gp, &r), MM_ERR_INVALID_ARGUMENT, "n_stop_strings 1, stop_strings NULL");
    gp.n_stop_strings = 0;
    parts[0] = part;
    parts[0].kind = 42;
    CHECK_STATUS(mm_generate(s, parts, 1, &gp, &r), MM_ERR_INVALID_ARGUMENT, "unknown part kind");
    parts[0].kind = MM_PART_IMAGE;
    parts[0].image = NULL;
    CHECK_STATUS(mm_generate(s, parts, 1, &gp, &r), MM_ERR_INVALID_ARGUMENT, "image part with image NULL");
    memset(pixels, 128, sizeof pixels);
    memset(&img, 0, sizeof img);
    img.struct_size = sizeof img;
    img.width = 2;
    img.height = 2;
    img.stride = 6;
    img.format = MM_PIXEL_RGB8;
    img.pixels = pixels;
    parts[0].image = &img;
    parts[1] = text_part("What is this?");
    CHECK_STATUS(mm_generate(s, parts, 2, &gp, &r), MM_ERR_UNSUPPORTED, "an image for a text-only build");
    img.stride = 5;
    CHECK_STATUS(mm_generate(s, parts, 2, &gp, &r), MM_ERR_INVALID_ARGUMENT, "image stride < width * 3");
    img.stride = 6;
    img.width = 0;
    CHECK_STATUS(mm_generate(s, parts, 2, &gp, &r), MM_ERR_INVALID_ARGUMENT, "image width 0");
    img.width = 2;
    img.pixels = NULL;
    CHECK_STATUS(mm_generate(s, parts, 2, &gp, &r), MM_ERR_INVALID_ARGUMENT, "image pixels NULL");
    CHECK(r == NULL, "no result object after failures");

    /* cancellation is latched */
    CHECK_STATUS(mm_session_reset(s), MM_OK, "mm_session_reset");
    CHECK(mm_session_n_past(s) == 0, "n_past is 0 after reset");
    CHECK_STATUS(mm_session_cancel(s), MM_OK, "mm_session_cancel before a generation");
    CHECK_STATUS(mm_generate(s, &part, 1, &gp, &r), MM_ERR_CANCELLED, "that generation returns MM_ERR_CANCELLED");
    CHECK_STATUS(mm_generate(s, &part, 1, &gp, &r), MM_OK, "the latch is cleared: the next one runs");
    mm_result_free(r);
    r = NULL;

    /* a callback that stops */
    gp.max_tokens = 200;
    gp.temperature = 0.8f;
    gp.seed = 17;
    memset(&col, 0, sizeof col);
    col.stop_after = 2;
    gp.on_token = collect_cb;
    gp.user = &col;
    CHECK_STATUS(mm_generate(s, &part, 1, &gp, &r), MM_OK, "a callback returning non-zero");
    if (r) {
        mm_result_tokens(r, &n);
        CHECK(mm_result_stop_reason(r) == MM_STOP_CANCELLED || mm_result_stop_reason(r) == MM_STOP_EOS,
              "stops it (stop reason %d, %zu tokens)", mm_result_stop_reason(r), n);
        CHECK(mm_result_seed(r) == 17, "the seed is reported");
        mm_result_free(r);
        r = NULL;
    }
    gp.on_token = NULL;
    gp.temperature = 0.0f;

    /* context full */
    mm_session_params_init(&sp);
    sp.n_ctx = 6;
    CHECK_STATUS(mm_session_create(model, &sp, &small), MM_OK, "a session with n_ctx 6");
    if (small) {
        gp.raw = 0;
        parts[0] = text_part("What is the capital of France?");
        CHECK_STATUS(mm_generate(small, parts, 1, &gp, &r), MM_ERR_CONTEXT_FULL, "a prompt longer than n_ctx");
        CHECK(mm_session_n_past(small) == 0, "nothing changed (n_past 0)");
        gp.raw = 1;
        gp.max_tokens = 50;
        parts[0] = text_part("Hi");
        CHECK_STATUS(mm_generate(small, parts, 1, &gp, &r), MM_OK, "a prompt that fits");
        if (r) {
            stop = mm_result_stop_reason(r);
#ifdef MM_STOP_CONTEXT_FULL
            CHECK(stop == MM_STOP_CONTEXT_FULL || stop == MM_STOP_EOS, "runs out of context (stop reason %d)", stop);
#else
            CHECK(stop != MM_STOP_MAX_TOKENS, "runs out of context (stop reason %d)", stop);
#endif
            CHECK(mm_session_n_past(small) <= 6, "n_past %lld <= n_ctx", (long long)mm_session_n_past(small));
            mm_result_free(r);
            r = NULL;
        }
        mm_session_free(small);
    }

    /* jobs */
    gp.raw = 1;
    gp.max_tokens = 1000;
    gp.temperature = 0.8f;
    gp.seed = 99;
    CHECK_STATUS(mm_session_reset(s), MM_OK, "reset before jobs");
    CHECK_STATUS(mm_job_start(s, &part, 1, &gp, &job), MM_OK, "mm_job_start");
    if (job) {
        CHECK_STATUS(mm_job_start(s, &part, 1, &gp, &job2), MM_ERR_BUSY, "a second job on the session");
        mm_session_free(s); /* refused while the job lives */
        past = mm_session_n_past(s);
        CHECK(past >= 0, "mm_session_free with a live job is refused (session still valid)");
        CHECK_STATUS(mm_generate(s, &part, 1, &gp, &r), MM_ERR_BUSY, "mm_generate while a job runs");
        stop = mm_job_poll(job, NULL, 0, NULL);
        CHECK(1, "mm_job_poll(capacity 0, n_bytes NULL) does not crash");
        memset(&col, 0, sizeof col);
        for (i = 0; i < 60000 && stop == MM_STOP_NONE; i++) { /* up to ~60 s */
            struct timespec ms = {0, 1000000};
            nanosleep(&ms, NULL);
            stop = mm_job_poll(job, buf, sizeof buf, &got);
            if (got && col.len + got < sizeof col.text) {
                memcpy(col.text + col.len, buf, got);
                col.len += got;
            }
            if (col.len > 0 && col.calls++ == 0) CHECK_STATUS(mm_job_cancel(job), MM_OK, "mm_job_cancel");
        }
        CHECK(stop == MM_STOP_CANCELLED || stop == MM_STOP_EOS, "the job ends cancelled (poll says %d)", stop);
        CHECK_STATUS(mm_job_wait(job, &r), MM_OK, "mm_job_wait");
        if (r) {
            CHECK(strlen(mm_result_text(r)) == col.len && memcmp(mm_result_text(r), col.text, col.len) == 0,
                  "the polled text equals the result text (%zu bytes)", col.len);
            mm_result_tokens(r, &n);
            CHECK(n < 1000, "cancelled early (%zu tokens)", n);
            mm_result_free(r);
            r = NULL;
        }
        CHECK(mm_job_wait(job, &r) != MM_OK && r == NULL, "a second mm_job_wait fails cleanly");
        CHECK(mm_job_poll(job, buf, sizeof buf, &got) != MM_STOP_NONE && got == 0, "polling a finished job");
        CHECK_STATUS(mm_generate(s, &part, 1, &gp, &r), MM_ERR_BUSY, "the session is busy until the job is freed");
        mm_result_free(r);
        r = NULL;
        mm_job_free(job);
        CHECK(mm_job_poll(job, buf, sizeof buf, &got) == MM_STOP_ERROR && got == 0, "polling a freed job");
        CHECK_STATUS(mm_job_cancel(job), MM_ERR_INVALID_ARGUMENT, "mm_job_cancel of a freed job");
        mm_job_free(job);
        CHECK(1, "a second mm_job_free is harmless");
    }
    gp.max_tokens = 3;
    CHECK_STATUS(mm_generate(s, &part, 1, &gp, &r), MM_OK, "the session works after its job is freed");
    mm_result_free(r);
    r = NULL;

    /* a job freed while it runs */
    gp.max_tokens = 1000;
    CHECK_STATUS(mm_job_start(s, &part, 1, &gp, &job), MM_OK, "mm_job_start (to be freed while running)");
    mm_job_free(job);
    CHECK(1, "mm_job_free of a running job cancels, waits and frees");

    /* model free with a live session is refused */
    mm_model_free(model);
    CHECK(mm_model_info(model, MM_MODEL_INFO_N_LAYERS) == 2, "mm_model_free with a live session is refused");

    mm_session_free(s);
    CHECK_STATUS(mm_generate(s, &part, 1, &gp, &r), MM_ERR_INVALID_ARGUMENT, "mm_generate on a freed session");
    CHECK(mm_session_n_past(s) < 0, "mm_session_n_past of a freed session is < 0");
    mm_session_free(s);
    CHECK(1, "a second mm_session_free is harmless");
}

static void test_model(void) {
    mm_model *model = NULL;
    mm_model_params mp;
    const mm_tokenizer *tok;

    mm_model_params_init(&mp);
    mp.require_tokenizer = 1;
    CHECK_STATUS(mm_model_load(model_dir, &mp, &model), MM_OK, "mm_model_load(MODEL_DIR, require_tokenizer)");
    if (!model) return;
    CHECK(strcmp(mm_model_type(model), "metamorph_llama") == 0, "model type %s", mm_model_type(model));
    CHECK(mm_model_info(model, MM_MODEL_INFO_VOCAB_SIZE) == 128258, "info vocab size");
    CHECK(mm_model_info(model, MM_MODEL_INFO_N_LAYERS) == 2, "info layers");
    CHECK(mm_model_info(model, MM_MODEL_INFO_HIDDEN_SIZE) == 64, "info hidden size");
    CHECK(mm_model_info(model, 9999) == -1, "info of an unknown key is -1");
    tok = mm_model_tokenizer(model);
    CHECK(tok != NULL, "the model has a tokenizer");
    if (tok) test_tokenizer(tok);
    test_generation(model);
    mm_model_free(model);
    CHECK(mm_model_info(model, MM_MODEL_INFO_N_LAYERS) == -1, "mm_model_info of a freed model is -1");
    CHECK(mm_model_tokenizer(model) == NULL, "mm_model_tokenizer of a freed model is NULL");
    CHECK(mm_vocab_size(tok) == -1, "the borrowed tokenizer died with its model");
    mm_model_free(model);
    CHECK(1, "a second mm_model_free is harmless");
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s MODEL_DIR\n", argv[0]);
        return 2;
    }
    model_dir = argv[1];
    test_library();
    test_params_init();
    test_null_handles();
    test_model();
    return check_summary();
}
