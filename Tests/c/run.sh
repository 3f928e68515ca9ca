#!/usr/bin/env bash
# The C tests of include/metamorph.h.
#
#   Tests/c/run.sh [LIB_DIR] [CKPT_DIR]
#
# LIB_DIR   directory holding libmetamorph.so (default: $METAMORPH_LIB_DIR, else .build/release)
# CKPT_DIR  directory holding the tiny test checkpoints of tools/make_checkpoints.py (default:
#           $METAMORPH_TEST_CKPT_DIR, else mm-f32 is generated into a temporary directory)
#
# (a) the header compiles as C99 and C++17 with -Wall -Wextra -Werror -pedantic (gcc, and clang
#     when present) and links from C++ (extern "C");
# (b) every function declared with MM_API is exported by the library (nm -D --defined-only);
# (c) test_abi.c (contract, bad input) and test_threads.c (one model, many threads) run;
# (d) the examples build with the documented command and run.
# Ends with the line "N passed, M failed"; exits non-zero if anything failed.
set -u

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
LIB_DIR=${1:-${METAMORPH_LIB_DIR:-$ROOT/.build/release}}
CKPT_DIR=${2:-${METAMORPH_TEST_CKPT_DIR:-}}
CC=${CC:-cc}
CXX=${CXX:-c++}
HEADER=$ROOT/include/metamorph.h
WORK=$(mktemp -d "${TMPDIR:-/tmp}/metamorph-ctest.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

passed=0
failed=0
pass() { passed=$((passed + 1)); echo "ok - $*"; }
fail() { failed=$((failed + 1)); echo "not ok - $*"; }
finish() {
    echo "$passed passed, $failed failed"
    [ "$failed" -eq 0 ]
    exit $?
}

LIB_DIR=$(cd "$LIB_DIR" 2>/dev/null && pwd) || { fail "library directory ${1:-} does not exist"; finish; }
LIB=$LIB_DIR/libmetamorph.so
[ -f "$LIB" ] || { fail "$LIB does not exist (build it: swift build -c release)"; finish; }
echo "# library: $LIB"

# --- (a) the header as C and C++ -------------------------------------------------------------
cat > "$WORK/header.c" <<'SRC'
#include "metamorph.h"
#include "metamorph.h" /* include guard */
/* every type and macro group is used, so a bad declaration cannot hide */
static size_t sizes[] = {sizeof(mm_model_params), sizeof(mm_session_params), sizeof(mm_gen_params),
                         sizeof(mm_prompt_part), sizeof(mm_image), sizeof(mm_timings), sizeof(mm_memory_file)};
static mm_log_fn log_fn;
static mm_token_fn token_fn;
int main(void) {
    mm_status st = MM_OK + MM_ERR_ABI_MISMATCH + MM_STOP_ERROR + MM_PART_TOKENS + MM_PIXEL_RGBA8;
    uint64_t seed = MM_SEED_RANDOM;
    (void)log_fn; (void)token_fn; (void)seed;
    return (int)(st + (int)sizes[0] - (int)sizes[0] - 13 - 5 - 2 - 1) + MM_ABI_VERSION - 1;
}
SRC
cp "$WORK/header.c" "$WORK/header.cpp"
compilers_c=("$CC")
compilers_cxx=("$CXX")
if command -v clang >/dev/null 2>&1 && [ "$(command -v clang)" != "$(command -v "$CC")" ]; then
    compilers_c+=(clang); compilers_cxx+=(clang++)
fi
for c in "${compilers_c[@]}"; do
    if out=$("$c" -std=c99 -Wall -Wextra -Werror -pedantic -I"$ROOT/include" -c "$WORK/header.c" -o "$WORK/h.o" 2>&1); then
        pass "metamorph.h compiles as C99 with $c -Wall -Wextra -Werror -pedantic"
    else
        fail "metamorph.h as C99 with $c:"; echo "$out" | sed 's/^/#   /'
    fi
done
for c in "${compilers_cxx[@]}"; do
    if out=$("$c" -std=c++17 -Wall -Wextra -Werror -pedantic -I"$ROOT/include" -c "$WORK/header.cpp" -o "$WORK/h.o" 2>&1); then
        pass "metamorph.h compiles as C++17 with $c -Wall -Wextra -Werror -pedantic"
    else
        fail "metamorph.h as C++17 with $c:"; echo "$out" | sed 's/^/#   /'
    fi
done
cat > "$WORK/link.cpp" <<'SRC'
#include <cstring>
#include "metamorph.h"
int main() {
    return mm_abi_version() == MM_ABI_VERSION && std::strcmp(mm_status_name(MM_OK), "MM_OK") == 0 ? 0 : 1;
}
SRC
if out=$("$CXX" -std=c++17 -Wall -Wextra -Werror -pedantic -I"$ROOT/include" "$WORK/link.cpp" -L"$LIB_DIR" -lmetamorph \
         -Wl,-rpath,"$LIB_DIR" -o "$WORK/link" 2>&1) && "$WORK/link"; then
    pass "a C++17 program links and calls the library (extern \"C\" names)"
else
    fail "C++17 link test:"; echo "$out" | sed 's/^/#   /'
fi

# --- (b) every MM_API function is exported ---------------------------------------------------
# Declarations start a line with MM_API; the name is the identifier before the first '('.
names=$(grep -E '^[[:space:]]*MM_API[[:space:]]' "$HEADER" | sed -E 's/\(.*//; s/.*[[:space:]*]//' | sort -u)
count=$(echo "$names" | grep -c .)
if [ "$count" -ge 40 ]; then pass "parsed $count MM_API functions from the header"; else fail "only $count MM_API functions parsed"; fi
exported=$(nm -D --defined-only "$LIB" | awk '$2 ~ /^[TtWiV]$/ {print $3}' | sed 's/@.*//' | sort -u)
for n in $names; do
    if echo "$exported" | grep -qx "$n"; then pass "exported: $n"; else fail "not exported by $LIB: $n"; fi
done
extra=$(echo "$exported" | grep '^mm_' | grep -vxF "$names" || true)
if [ -z "$extra" ]; then pass "no mm_* symbol is exported without a declaration in the header"
else fail "exported but not declared in the header: $(echo $extra)"; fi

# --- checkpoint --------------------------------------------------------------------------------
if [ -z "$CKPT_DIR" ]; then
    CKPT_DIR=$WORK/ckpt
    if ! python3 "$ROOT/tools/make_checkpoints.py" --out "$CKPT_DIR" --only mm-f32 >"$WORK/make.log" 2>&1; then
        fail "tools/make_checkpoints.py failed:"; sed 's/^/#   /' "$WORK/make.log"; finish
    fi
fi
MODEL=$CKPT_DIR/mm-f32
[ -f "$MODEL/config.json" ] || { fail "no checkpoint at $MODEL"; finish; }
echo "# model: $MODEL"

# --- (c) C programs ------------------------------------------------------------------------------
build() { # name, extra flags...
    local name=$1; shift
    if out=$("$CC" -std=c99 -Wall -Wextra -Werror -pedantic -O1 -g -I"$ROOT/include" -I"$HERE" "$HERE/$name.c" \
             -L"$LIB_DIR" -lmetamorph -Wl,-rpath,"$LIB_DIR" "$@" -o "$WORK/$name" 2>&1); then
        pass "build $name.c"
        return 0
    fi
    fail "build $name.c:"; echo "$out" | sed 's/^/#   /'
    return 1
}
run_counted() { # name args...: runs a check.h program, adds its counts
    local name=$1; shift
    local log=$WORK/$name.log rc p f
    timeout 600 "$WORK/$name" "$@" >"$log" 2>&1
    rc=$?
    grep -E '^(not ok|#)' "$log"
    p=$(sed -nE 's/^# ([0-9]+) passed, ([0-9]+) failed$/\1/p' "$log" | tail -1)
    f=$(sed -nE 's/^# ([0-9]+) passed, ([0-9]+) failed$/\2/p' "$log" | tail -1)
    if [ -z "$p" ]; then
        fail "$name did not finish (exit status $rc; a crash?); last lines:"; tail -5 "$log" | sed 's/^/#   /'
        return
    fi
    passed=$((passed + p)); failed=$((failed + f))
    if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then fail "$name exited with status $rc"; fi
    echo "# $name: $p passed, $f failed"
}
build test_abi && run_counted test_abi "$MODEL"
build test_threads -pthread && run_counted test_threads "$MODEL"

# --- (d) the examples ------------------------------------------------------------------------------
for ex in simple poll; do
    if out=$("$CC" -std=c99 -Wall -Wextra -Iinclude -I"$ROOT/include" "$ROOT/examples/c/$ex.c" -L"$LIB_DIR" -lmetamorph \
             -Wl,-rpath,"$LIB_DIR" -o "$WORK/$ex" 2>&1) && [ -z "$out" ]; then
        pass "examples/c/$ex.c builds without warnings"
    else
        fail "examples/c/$ex.c:"; echo "$out" | sed 's/^/#   /'
    fi
done
if [ -x "$WORK/simple" ]; then
    if timeout 300 "$WORK/simple" "$MODEL" "What is the capital of France?" >"$WORK/simple.out" 2>&1 &&
       grep -q '^\[stop: ' "$WORK/simple.out"; then pass "examples/c/simple runs"
    else fail "examples/c/simple:"; tail -5 "$WORK/simple.out" | sed 's/^/#   /'; fi
    if ! timeout 60 "$WORK/simple" /nonexistent "x" >"$WORK/simple.err" 2>&1 && grep -q 'MM_ERR_IO' "$WORK/simple.err"
    then pass "examples/c/simple reports a load failure with mm_last_error"
    else fail "examples/c/simple on a missing model:"; sed 's/^/#   /' "$WORK/simple.err"; fi
fi
if [ -x "$WORK/poll" ]; then
    if timeout 300 "$WORK/poll" "$MODEL" "Tell me a story." 2 >"$WORK/poll.out" 2>&1 &&
       grep -q 'frames, stop reason' "$WORK/poll.out"; then pass "examples/c/poll runs and cancels after 2 frames"
    else fail "examples/c/poll:"; tail -5 "$WORK/poll.out" | sed 's/^/#   /'; fi
fi

finish
