/*
 * metamorph.h: the public C interface of libmetamorph.
 *
 * metamorph runs MetaMorph models (one autoregressive LLaMA-3 model that reads images and text
 * and writes text and continuous visual tokens) on the CPU. This header is the whole public
 * surface: C, C++, Python (ctypes), Rust and game engines all bind to it.
 *
 * ---------------------------------------------------------------------------------------------
 * Design rules (read once, they hold for every function below)
 *
 *  - Handles. mm_model is immutable once loaded and may be shared by any number of threads and
 *    sessions. mm_session holds one conversation (KV cache, RNG, history); one thread at a time
 *    may use a session (a second concurrent generation on the same session fails with
 *    MM_ERR_BUSY instead of corrupting it). mm_tokenizer is immutable and thread-safe.
 *    mm_result and mm_job are owned by the caller and freed with their own free function.
 *  - Status codes. Every function that can fail returns mm_status. MM_OK is 0. On failure
 *    mm_last_error() returns a message for the calling thread (thread-local, valid until the next
 *    failing call on that thread). The library never aborts the host on bad input and never
 *    writes to stdout or stderr; diagnostics go to the log sink set by mm_set_log_callback.
 *  - Structs. Every parameter struct starts with `struct_size` and gets its defaults from an
 *    mm_*_params_init() function; members are fixed-width integers, floats and pointers (no bool,
 *    no enum-typed members). New members are only ever appended; the library reads a struct
 *    only up to the struct_size the caller passes, so an older host keeps working with a newer
 *    library. mm_struct_size() lets bindings check their mirrors.
 *  - Memory. Inputs (text, images, arrays) are copied at the call: the host may free them as soon
 *    as the call returns. Outputs are either caller-owned buffers with a size-needed answer
 *    (tokenize, detokenize) or library-owned objects with their own free (mm_result).
 *    Whoever allocates, frees. Strings are UTF-8; lengths are in bytes; invalid UTF-8 is
 *    rejected with MM_ERR_INVALID_UTF8.
 *  - Callbacks receive the host's `void *user` and run on the thread doing the work.
 *  - Determinism. The same model, prompt, parameters, seed and thread count give the same
 *    tokens. A different thread count can change the order of floating-point sums and so, rarely,
 *    a sampled or greedy token.
 *
 * Versioning: MM_VERSION_* describe the release; MM_ABI_VERSION changes only when a published
 * function or struct changes incompatibly. Bindings compare it to mm_abi_version() at load time.
 * Deprecated functions stay exported.
 * ---------------------------------------------------------------------------------------------
 */
#ifndef METAMORPH_H
#define METAMORPH_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(_WIN32) && defined(MM_BUILD)
#define MM_API __declspec(dllexport)
#elif defined(_WIN32)
#define MM_API __declspec(dllimport)
#else
#define MM_API __attribute__((visibility("default")))
#endif

#define MM_VERSION_MAJOR 0
#define MM_VERSION_MINOR 1
#define MM_VERSION_PATCH 0
#define MM_ABI_VERSION 1

/* ----------------------------------------------------------------------------------------- */
/* Status codes                                                                              */

typedef int32_t mm_status;

#define MM_OK                      0
#define MM_ERR_INVALID_ARGUMENT    1  /* NULL where a value is required, bad parameter value */
#define MM_ERR_IO                  2  /* a file could not be opened, read or mapped */
#define MM_ERR_FORMAT              3  /* a file is malformed: JSON, safetensors, tokenizer.json */
#define MM_ERR_UNSUPPORTED         4  /* valid input this build cannot handle (dtype, model type) */
#define MM_ERR_OUT_OF_MEMORY       5
#define MM_ERR_CONTEXT_FULL        6  /* prompt + generation do not fit the session's context */
#define MM_ERR_CANCELLED           7  /* mm_session_cancel / mm_job_cancel stopped the work */
#define MM_ERR_BUSY                8  /* the session is already generating on another thread */
#define MM_ERR_BUFFER_TOO_SMALL    9  /* caller buffer too small; the size needed was reported */
#define MM_ERR_INVALID_UTF8       10
#define MM_ERR_OUT_OF_RANGE       11  /* a token id or index outside its valid range */
#define MM_ERR_INTERNAL           12  /* a bug in metamorph; please report the message */
#define MM_ERR_ABI_MISMATCH       13  /* struct_size smaller than the oldest layout we know */

/* The message of the last failure on the calling thread ("" if none). The pointer stays valid
 * until the next failing call on this thread. Thread safety: any thread. Never NULL. */
MM_API const char *mm_last_error(void);

/* A static English name for a status code, e.g. "MM_ERR_IO". Never NULL. Any thread. */
MM_API const char *mm_status_name(mm_status status);

/* ----------------------------------------------------------------------------------------- */
/* Library                                                                                   */

/* Runtime ABI version; equals MM_ABI_VERSION of the header the library was built with. */
MM_API uint32_t mm_abi_version(void);
/* "MAJOR.MINOR.PATCH"; static storage. Any thread. */
MM_API const char *mm_version_string(void);

/* Sizes of the library's parameter structs, so bindings can check their mirrors. Returns 0 for
 * an unknown `which`. */
#define MM_STRUCT_MODEL_PARAMS    1
#define MM_STRUCT_SESSION_PARAMS  2
#define MM_STRUCT_GEN_PARAMS      3
#define MM_STRUCT_PROMPT_PART     4
#define MM_STRUCT_IMAGE           5
#define MM_STRUCT_TIMINGS         6
#define MM_STRUCT_MEMORY_FILE     7
#define MM_STRUCT_RENDER_PARAMS   8
MM_API size_t mm_struct_size(int32_t which);

/* Log levels. */
#define MM_LOG_DEBUG 0
#define MM_LOG_INFO  1
#define MM_LOG_WARN  2
#define MM_LOG_ERROR 3

/* Log sink: `message` is a NUL-terminated UTF-8 line without trailing newline, valid only
 * during the call. May be called from any thread the library works on, possibly concurrently:
 * the sink must be thread-safe. */
typedef void (*mm_log_fn)(int32_t level, const char *message, void *user);

/* Set the process-wide log sink (NULL: discard everything, the default) and the lowest level
 * passed to it. Thread safety: any thread; messages already in flight may still reach the
 * previous sink. */
MM_API void mm_set_log_callback(mm_log_fn fn, void *user, int32_t min_level);

/* Default number of compute threads for models and sessions whose params say 0.
 * n <= 0 restores the built-in default (the number of online CPUs). Any thread. */
MM_API void mm_set_default_threads(int32_t n);
MM_API int32_t mm_get_default_threads(void);

/* ----------------------------------------------------------------------------------------- */
/* Tokenizer                                                                                 */

typedef struct mm_tokenizer mm_tokenizer;

/* Load a Hugging Face tokenizer.json (a file, or a directory holding one). The LLaMA-3
 * vocabulary gets MetaMorph's <image_start> (128256) and <image_end> (128257) added as special
 * tokens when missing, as the official loader does. Caller frees with mm_tokenizer_free.
 * Errors: MM_ERR_INVALID_ARGUMENT, MM_ERR_IO, MM_ERR_FORMAT (message names the component or
 * token at fault), MM_ERR_UNSUPPORTED (an unknown component type). Any thread. */
MM_API mm_status mm_tokenizer_load(const char *path, mm_tokenizer **out);
/* Same from tokenizer.json bytes in memory (copied). */
MM_API mm_status mm_tokenizer_load_from_memory(const void *json, size_t size, mm_tokenizer **out);
/* NULL is allowed. Not while another thread still uses the tokenizer. */
MM_API void mm_tokenizer_free(mm_tokenizer *tok);

/* Tokenize flags. */
#define MM_TOKENIZE_ADD_BOS        1  /* apply the post-processor (prepends BOS for LLaMA-3) */
/* Special-token text inside the input (e.g. "<|eot_id|>") is always matched as that token, as
 * the reference tokenizer does by default. */

/* Tokenize `text_len` bytes of UTF-8 into ids[0..capacity). *n_tokens receives the number of
 * ids the text needs, also when the buffer is too small (then MM_ERR_BUFFER_TOO_SMALL and the
 * buffer contents are unspecified): call once with capacity 0 to size the buffer.
 * `ids` may be NULL when capacity is 0. Errors: MM_ERR_INVALID_ARGUMENT, MM_ERR_INVALID_UTF8
 * (message gives the byte offset), MM_ERR_BUFFER_TOO_SMALL. Thread safety: any thread. */
MM_API mm_status mm_tokenize(const mm_tokenizer *tok, const char *text, size_t text_len, int32_t flags,
                             int32_t *ids, size_t capacity, size_t *n_tokens);

/* Detokenize flags. */
#define MM_DETOKENIZE_SKIP_SPECIAL 1  /* drop special tokens (<|eot_id|>, <image_start>, ...) */

/* Decode ids into UTF-8 text in buf[0..capacity). *n_bytes receives the bytes needed, not
 * counting a terminating NUL; a NUL is written when it fits (capacity > *n_bytes). Byte
 * sequences that are not valid UTF-8 decode to U+FFFD, as the reference tokenizer does.
 * Errors: MM_ERR_OUT_OF_RANGE (an id outside 0..vocab-1; message names it),
 * MM_ERR_BUFFER_TOO_SMALL. Any thread. */
MM_API mm_status mm_detokenize(const mm_tokenizer *tok, const int32_t *ids, size_t n_ids, int32_t flags,
                               char *buf, size_t capacity, size_t *n_bytes);

/* The raw bytes of one token (possibly an incomplete UTF-8 sequence; added tokens give their
 * text). Same buffer protocol as mm_detokenize, no NUL written. Any thread. */
MM_API mm_status mm_token_to_piece(const mm_tokenizer *tok, int32_t id, char *buf, size_t capacity,
                                   size_t *n_bytes);

/* Vocabulary size including added tokens (128258 for MetaMorph). -1 when tok is NULL. */
MM_API int32_t mm_vocab_size(const mm_tokenizer *tok);

/* Well-known token ids. */
#define MM_TOKEN_BOS          0  /* <|begin_of_text|> */
#define MM_TOKEN_EOS          1  /* the first end-of-sequence id of the model / tokenizer */
#define MM_TOKEN_EOT          2  /* <|eot_id|> */
#define MM_TOKEN_IMAGE_START  3  /* <image_start> */
#define MM_TOKEN_IMAGE_END    4  /* <image_end> */
/* *id receives the id, or -1 with MM_ERR_OUT_OF_RANGE when this tokenizer has no such token. */
MM_API mm_status mm_token_special(const mm_tokenizer *tok, int32_t which, int32_t *id);
/* Exact lookup of a token's text (vocabulary or added token). MM_ERR_OUT_OF_RANGE if absent. */
MM_API mm_status mm_token_lookup(const mm_tokenizer *tok, const char *text, size_t text_len, int32_t *id);
/* 1 if the id is a special token, 0 if not, -1 if out of range. */
MM_API int32_t mm_token_is_special(const mm_tokenizer *tok, int32_t id);

/* ----------------------------------------------------------------------------------------- */
/* Model                                                                                     */

typedef struct mm_model mm_model;

typedef struct mm_model_params {
    uint32_t struct_size;      /* sizeof(mm_model_params) */
    int32_t n_threads;         /* threads for work done at load time; 0 = default */
    int32_t use_mmap;          /* 1 (default): map weights read-only; 0: read them into memory */
    int32_t require_tokenizer; /* 1: fail when tokenizer.json is missing; 0 (default): text
                                  functions then fail with MM_ERR_UNSUPPORTED, token prompts work */
    const char *vision_tower_path; /* separate SigLIP directory (vision_model.* names), or NULL */
    const char *tokenizer_path;    /* tokenizer.json to use instead of the checkpoint's, or NULL */
} mm_model_params;

/* Fill defaults (sets struct_size). */
MM_API void mm_model_params_init(mm_model_params *params);

/* Load a checkpoint directory: config.json, generation_config.json (optional), tokenizer.json,
 * model.safetensors or shards + model.safetensors.index.json; F32/F16/BF16 tensors are used in
 * place from the mapping. `params` may be NULL for defaults. Caller frees with mm_model_free.
 * Errors: MM_ERR_IO, MM_ERR_FORMAT (corrupt JSON or safetensors, tensor shape or dtype that
 * disagrees with the config, missing tensor; the message names the file and tensor),
 * MM_ERR_UNSUPPORTED (model_type), MM_ERR_OUT_OF_MEMORY. Any thread. */
MM_API mm_status mm_model_load(const char *path, const mm_model_params *params, mm_model **out);

/* One file of a checkpoint held in memory (an asset pack). `name` is the file name as it would
 * appear in the checkpoint directory ("config.json", "model.safetensors", shard names...). */
typedef struct mm_memory_file {
    uint32_t struct_size;
    const char *name;
    const void *data;
    size_t size;
} mm_memory_file;

#define MM_MEMORY_COPY    0  /* the library copies the bytes (default): free yours at return */
#define MM_MEMORY_BORROW  1  /* the library uses the bytes in place: keep them alive and
                                unchanged until mm_model_free; saves a copy of the weights */
/* Load a checkpoint from files in memory. Same errors as mm_model_load. */
MM_API mm_status mm_model_load_from_memory(const mm_memory_file *files, size_t n_files, int32_t memory_mode,
                                           const mm_model_params *params, mm_model **out);

/* NULL is allowed. All sessions and jobs of the model must be freed first; freeing a model with
 * live sessions is refused (the model is kept and an error is logged). */
MM_API void mm_model_free(mm_model *model);

/* The model's tokenizer (borrowed: valid while the model lives; do not free), or NULL if the
 * checkpoint has none. */
MM_API const mm_tokenizer *mm_model_tokenizer(const mm_model *model);

/* Model facts. */
#define MM_MODEL_INFO_VOCAB_SIZE        0
#define MM_MODEL_INFO_HIDDEN_SIZE       1
#define MM_MODEL_INFO_N_LAYERS          2
#define MM_MODEL_INFO_MAX_POSITIONS     3
#define MM_MODEL_INFO_HAS_VISION_INPUT  4  /* 1 if images can be given */
#define MM_MODEL_INFO_HAS_VISION_OUTPUT 5  /* 1 if the model has a vision head (visual tokens out) */
#define MM_MODEL_INFO_NUM_IMAGE_TOKENS  6
#define MM_MODEL_INFO_MM_HIDDEN_SIZE    7  /* width of a visual token (1152 for SigLIP so400m) */
/* Returns the value, or -1 for an unknown key or NULL model. Any thread. */
MM_API int64_t mm_model_info(const mm_model *model, int32_t key);

/* The model type from config.json ("metamorph_llama", "llama"); valid while the model lives.
 * NULL for a NULL or freed handle. */
MM_API const char *mm_model_type(const mm_model *model);

/* ----------------------------------------------------------------------------------------- */
/* Sessions                                                                                  */

typedef struct mm_session mm_session;

typedef struct mm_session_params {
    uint32_t struct_size;
    int32_t n_ctx;      /* context length in positions; 0 = min(max_position_embeddings, 4096) */
    int32_t n_threads;  /* compute threads; 0 = mm_get_default_threads() */
} mm_session_params;

MM_API void mm_session_params_init(mm_session_params *params);

/* Create a conversation on a model. Several sessions may share one model, each on its own
 * thread. Caller frees with mm_session_free (before the model). Any thread. */
MM_API mm_status mm_session_create(const mm_model *model, const mm_session_params *params, mm_session **out);
/* NULL is allowed. Refused (logged) while a job of the session runs: cancel and free it first. */
MM_API void mm_session_free(mm_session *session);
/* Forget the conversation (KV cache and history). MM_ERR_BUSY while generating. */
MM_API mm_status mm_session_reset(mm_session *session);
/* Positions used so far in the session's context. */
MM_API int64_t mm_session_n_past(const mm_session *session);  /* -1 for a NULL/freed handle */
/* Set the compute threads of later generations (0 = default). */
MM_API mm_status mm_session_set_threads(mm_session *session, int32_t n_threads);

/* Ask the session's running (or next) generation to stop. Cooperative and latched: safe from
 * any thread, including a signal-free other thread while mm_generate blocks; a cancel sent
 * before a generation starts is not lost: that generation returns MM_ERR_CANCELLED at once.
 * The latch is cleared when a generation observes it. */
MM_API mm_status mm_session_cancel(mm_session *session);

/* ----------------------------------------------------------------------------------------- */
/* Prompts                                                                                   */

/* Pixel formats of mm_image. */
#define MM_PIXEL_RGB8  0
#define MM_PIXEL_RGBA8 1  /* alpha is dropped (not composited) */

typedef struct mm_image {
    uint32_t struct_size;
    int32_t width, height;  /* 1..8000 each */
    int32_t stride;         /* bytes from one row to the next (>= width * channels) */
    int32_t format;         /* MM_PIXEL_* */
    const uint8_t *pixels;  /* copied at the call */
} mm_image;

/* Kinds of prompt part. */
#define MM_PART_TEXT   0  /* UTF-8 text of the user message */
#define MM_PART_IMAGE  1  /* an image (a video is several images in a row) */
#define MM_PART_TOKENS 2  /* token ids fed exactly as given (no BOS is added, even on the first
                             turn; no template); raw mode only */

typedef struct mm_prompt_part {
    uint32_t struct_size;
    int32_t kind;            /* MM_PART_* */
    const char *text;        /* MM_PART_TEXT */
    size_t text_len;         /*   bytes; SIZE_MAX = NUL-terminated */
    const mm_image *image;   /* MM_PART_IMAGE */
    const int32_t *tokens;   /* MM_PART_TOKENS */
    size_t n_tokens;
} mm_prompt_part;

/* ----------------------------------------------------------------------------------------- */
/* Generation                                                                                */

/* Stop reasons. */
#define MM_STOP_NONE        0  /* still running (jobs) */
#define MM_STOP_EOS         1  /* an end-of-sequence token (it is in the result's ids) */
#define MM_STOP_MAX_TOKENS  2
#define MM_STOP_STRING      3  /* a stop string matched (removed from the text) */
#define MM_STOP_CANCELLED   4
#define MM_STOP_ERROR       5  /* jobs: the error is in mm_job_wait's status */
#define MM_STOP_CONTEXT_FULL 6 /* the session's context filled up during the reply */

/* Streaming callback: `text` holds `len` bytes of whole UTF-8 characters (never half a code
 * point) newly added to the reply, `token` the id just generated (-1 when the call only flushes
 * held-back text). Return 0 to go on, non-zero to stop (stop reason MM_STOP_CANCELLED). */
typedef int32_t (*mm_token_fn)(const char *text, size_t len, int32_t token, void *user);

typedef struct mm_gen_params {
    uint32_t struct_size;
    int32_t max_tokens;        /* > 0; counts every generated position (text and visual) */
    float temperature;         /* 0 = greedy (default 0) */
    int32_t top_k;             /* 0 = off */
    float top_p;               /* 1 = off */
    float min_p;               /* 0 = off */
    float repeat_penalty;      /* 1 = off; applied to ids in the last repeat_last_n positions */
    int32_t repeat_last_n;     /* default 64; -1 = the whole context */
    uint64_t seed;             /* MM_SEED_RANDOM = pick one (reported in the result) */
    int32_t raw;               /* 1: no chat template; the text is used as is with BOS added */
    int32_t keep_logits;       /* 1: keep the logits of the first generated position in the
                                  result (mm_result_logits) */
    const char *assistant_prefix;      /* the reply is forced to start with this text, or NULL */
    const char *const *stop_strings;   /* n_stop_strings NUL-terminated strings, copied */
    size_t n_stop_strings;
    mm_token_fn on_token;      /* optional streaming callback */
    void *user;                /* passed to on_token */
    /* End to end (optional): render every complete generated image with this visualizer after
     * the reply, into the result's pictures (mm_result_picture). NULL = no rendering. The
     * visualizer must outlive the call. */
    const struct mm_visualizer *visualizer;
    const struct mm_render_params *render;   /* NULL = defaults */
} mm_gen_params;

#define MM_SEED_RANDOM UINT64_MAX

MM_API void mm_gen_params_init(mm_gen_params *params);

typedef struct mm_result mm_result;

/* Append the user message `parts` to the session's conversation (wrapped in the model's chat
 * template unless params->raw) and generate the assistant's reply. Blocks until done; the
 * session's KV cache keeps the conversation for the next call. On MM_OK *out receives a result
 * the caller frees with mm_result_free; stop reasons CANCELLED and MAX_TOKENS are MM_OK with
 * the partial result. Errors: MM_ERR_INVALID_ARGUMENT (no parts, max_tokens <= 0, bad image),
 * MM_ERR_INVALID_UTF8, MM_ERR_CONTEXT_FULL (the prompt does not fit: nothing is changed),
 * MM_ERR_CANCELLED (cancel latched before start), MM_ERR_BUSY (the session is generating on
 * another thread), MM_ERR_UNSUPPORTED (images for a text-only model, text without tokenizer).
 * Thread safety: one call per session at a time; different sessions run in parallel. */
MM_API mm_status mm_generate(mm_session *session, const mm_prompt_part *parts, size_t n_parts,
                             const mm_gen_params *params, mm_result **out);

/* Result accessors. Pointers stay valid until mm_result_free. */
MM_API const char *mm_result_text(const mm_result *r);                      /* specials removed */
MM_API const int32_t *mm_result_tokens(const mm_result *r, size_t *n);     /* every generated id */
MM_API const int32_t *mm_result_prompt_tokens(const mm_result *r, size_t *n); /* image = -200 */
MM_API int32_t mm_result_stop_reason(const mm_result *r);        /* MM_STOP_ERROR if r is not live */
/* Logits of the first generated position (float32 [vocab]) if params->keep_logits, else NULL. */
MM_API const float *mm_result_logits(const mm_result *r, size_t *n);
MM_API uint64_t mm_result_seed(const mm_result *r);

typedef struct mm_timings {
    uint32_t struct_size;
    int32_t n_prompt_tokens;   /* positions prefilled (images count their visual tokens) */
    int32_t n_generated;       /* positions generated */
    int32_t pad0;
    double load_ms;            /* model load (0 if not known to the session) */
    double prompt_ms;          /* prefill, including image encoding */
    double generate_ms;        /* decode */
} mm_timings;
MM_API mm_status mm_result_timings(const mm_result *r, mm_timings *out);

/* Visual tokens generated in image mode: after the model emits <image_start> (or the reply is
 * forced to open with it through assistant_prefix), each of num_image_tokens positions yields one
 * visual token in SigLIP space (dim = mm_hidden_size, L2-normalised when the model's
 * normalize_vision is set). mm_result_n_images: images begun in the reply (-1 for a bad handle).
 * mm_result_image_tokens copies image `index`'s tokens (float32 [n_tokens][dim]) into buf
 * (capacity in floats), reporting n_tokens, dim and complete (1 if all num_image_tokens were
 * produced; 0 when max_tokens, the context or a cancel cut the image short: the tokens made so
 * far are returned). Same size-needed protocol as mm_detokenize; each out pointer may be NULL. */
MM_API int32_t mm_result_n_images(const mm_result *r);
MM_API mm_status mm_result_image_tokens(const mm_result *r, int32_t index, float *buf, size_t capacity,
                                        int32_t *n_tokens, int32_t *dim, int32_t *complete);

/* Pictures rendered end to end (gen params `visualizer`): count, and picture `index` (borrowed:
 * valid until mm_result_free; do not free). -1 / NULL for a bad handle or index. */
MM_API int32_t mm_result_n_pictures(const mm_result *r);
MM_API const struct mm_picture *mm_result_picture(const mm_result *r, int32_t index);

/* NULL is allowed. */
MM_API void mm_result_free(mm_result *r);

/* ----------------------------------------------------------------------------------------- */
/* Visualizer: visual tokens -> RGB pictures                                                 */
/* An adapter + Stable Diffusion 1.5-style UNet + VAE decoder + scheduler (METAMORPH.md
 * section 5), loaded from a visualizer directory (adapter/, unet/, vae/, scheduler/,
 * visualizer.json; tools/convert_visualizer.py makes one from the official files).         */

typedef struct mm_visualizer mm_visualizer;
typedef struct mm_picture mm_picture;

/* Called after each denoising step with the steps done and the total. Return 0 to go on,
 * non-zero to cancel (the render fails with MM_ERR_CANCELLED). Runs on the rendering thread. */
typedef int32_t (*mm_progress_fn)(int32_t step, int32_t n_steps, void *user);

typedef struct mm_render_params {
    uint32_t struct_size;
    int32_t steps;            /* denoising steps; 0 = the visualizer's default (50) */
    float guidance;           /* classifier-free guidance scale; < 0 = default (7.5) */
    int32_t n_threads;        /* 0 = mm_get_default_threads() */
    uint64_t seed;            /* initial latents from metamorph's own seeded generator (not torch's
                                 RNG: the same seed gives the same picture here, not in diffusers);
                                 MM_SEED_RANDOM = pick one */
    const char *scheduler;    /* NULL = the visualizer's scheduler_config.json; "pndm", "ddim",
                                 "euler" (built from that config like diffusers' from_config);
                                 or a subfolder of the visualizer holding a scheduler_config.json */
    const float *latents;     /* optional initial latents float32 [1][4][h][w], copied; NULL = seed */
    size_t n_latents;         /* floats in latents */
    mm_progress_fn on_progress;   /* optional */
    void *user;
} mm_render_params;

MM_API void mm_render_params_init(mm_render_params *params);

/* Load a visualizer directory. Errors: MM_ERR_IO, MM_ERR_FORMAT, MM_ERR_UNSUPPORTED. The
 * visualizer is immutable; renders from several threads are serialised internally. */
MM_API mm_status mm_visualizer_load(const char *path, mm_visualizer **out);
/* NULL allowed. Not while a render or generation uses it. */
MM_API void mm_visualizer_free(mm_visualizer *v);

/* Render `n_tokens` visual tokens of width `dim` (float32 [n_tokens][dim], copied; e.g. from
 * mm_result_image_tokens) into a new picture owned by the caller (mm_picture_free).
 * Errors: MM_ERR_INVALID_ARGUMENT (dim or count the adapter cannot take, bad latents size),
 * MM_ERR_CANCELLED (on_progress returned non-zero). */
MM_API mm_status mm_visualizer_render(const mm_visualizer *v, const float *tokens, int32_t n_tokens, int32_t dim,
                                      const mm_render_params *params, mm_picture **out);

/* RGB8 pixels, `stride` bytes per row. Accessors return 0 / NULL for a bad handle. */
MM_API int32_t mm_picture_width(const mm_picture *p);
MM_API int32_t mm_picture_height(const mm_picture *p);
MM_API int32_t mm_picture_stride(const mm_picture *p);
MM_API const uint8_t *mm_picture_pixels(const mm_picture *p);
/* Frees a picture from mm_visualizer_render (pictures owned by a result are freed with it and
 * are refused here). NULL allowed. */
MM_API void mm_picture_free(mm_picture *p);

/* ----------------------------------------------------------------------------------------- */
/* Jobs: the same generation without blocking, for frame loops                               */

typedef struct mm_job mm_job;

/* Start a generation on a background thread and return at once. Inputs are copied. The
 * session is busy until the job is freed. params->on_token is ignored for jobs (poll instead),
 * and so is params->visualizer: render a job's images with mm_visualizer_render (from a worker
 * thread of the host's, since a render takes long).
 * Errors: as mm_generate's argument checks, plus MM_ERR_BUSY. */
MM_API mm_status mm_job_start(mm_session *session, const mm_prompt_part *parts, size_t n_parts,
                              const mm_gen_params *params, mm_job **out);

/* Non-blocking: copy up to `capacity` bytes (pass capacity >= 4, one UTF-8 character, or polling
 * may make no progress) of reply text produced since the last poll into buf
 * (whole UTF-8 characters only; what does not fit stays for the next poll), report the bytes
 * written in *n_bytes (may be NULL when capacity is 0) and return the job's stop reason:
 * MM_STOP_NONE while it runs, MM_STOP_ERROR for a NULL/freed job. Any thread, but one poller at a
 * time. */
MM_API int32_t mm_job_poll(mm_job *job, char *buf, size_t capacity, size_t *n_bytes);

/* Request cancellation (latched, any thread, returns at once). */
MM_API mm_status mm_job_cancel(mm_job *job);

/* Block until the job ends; on MM_OK *out (may be NULL if unwanted) receives the result, owned
 * by the caller. Returns the generation's status. Can be called once per job. */
MM_API mm_status mm_job_wait(mm_job *job, mm_result **out);

/* Cancel if running, wait, and free. NULL allowed. */
MM_API void mm_job_free(mm_job *job);

#ifdef __cplusplus
}
#endif
#endif /* METAMORPH_H */
