"""The shell text of ``build_engine.sh`` (:mod:`distill.export.tensorrt_script` writes the script around it).

:data:`START` (the script's helpers: the summary, the build-failure trap, ``ENGINE.source.json``) is used as is; the
others are ``%``-formatted by the writer (a literal ``%`` in them is ``%%``): :data:`DETECT` (which TensorRT),
:data:`SMOKE` (each engine run by ``trtexec --loadEngine`` at the profile's batches where no polygraphy check runs it,
or at those the check does not run) and :data:`CHECK` (each engine against ONNX Runtime on the export's calibration
images, by polygraphy; trtexec's runs instead where polygraphy cannot run TensorRT).
"""
from __future__ import annotations

DETECT = r"""
# Which TensorRT: trtexec's banner ("[TensorRT v100300]" is 10.3.0, "[TensorRT v8502]" 8.5.2, or a dotted
# "[TensorRT v11.0.0.x]"); else the Python bindings. TRT_MAJOR=10|11 overrides its major.
trt_version() {
    local v
    v="$("$TRTEXEC" --help 2>&1 | grep -o -m 1 '\[TensorRT v[0-9.]*' || true)"
    v="${v#\[TensorRT v}"
    if [[ "$v" =~ ^[0-9]+(\.[0-9]+)+ ]]; then echo "${BASH_REMATCH[0]}"; return; fi
    if [[ "$v" =~ ^[0-9]+$ ]]; then
        if [ "$v" -ge 100000 ]; then echo "$((v / 10000)).$((v / 100 %% 100)).$((v %% 100))"
        else echo "$((v / 1000)).$((v / 100 %% 10)).$((v %% 100))"; fi
        return
    fi
    local py pys=("$PYTHON")  # polygraphy's Python (in a venv it may lack tensorrt), then python3 unless PYTHON= is given
    if [ -z "$PYTHON_GIVEN" ] && [ "$PYTHON" != python3 ]; then pys+=(python3); fi
    for py in "${pys[@]}"; do
        v="$("$py" -c 'import tensorrt; print(tensorrt.__version__)' 2>/dev/null || true)"
        if [[ "$v" =~ ^[0-9]+(\.[0-9]+)+ ]]; then echo "${BASH_REMATCH[0]}"; return; fi
    done
}
TRT_VERSION="$(trt_version)"
if [ -n "${TRT_MAJOR:-}" ] && ! [[ "$TRT_MAJOR" =~ ^[0-9]+$ ]]; then
    echo "TRT_MAJOR=$TRT_MAJOR: not a TensorRT major version: set TRT_MAJOR=10 or TRT_MAJOR=11, or unset it" >&2; exit 1
fi
TRT_MAJOR="${TRT_MAJOR:-${TRT_VERSION%%%%.*}}"
# The full version goes into each ENGINE.source.json (engines are not portable across minor versions either), unless
# TRT_MAJOR overrides it with another major (then the detected version is not the one built for).
if [ -n "$TRT_VERSION" ] && [ "${TRT_VERSION%%%%.*}" != "$TRT_MAJOR" ]; then TRT_VERSION=""; fi
if ! [[ "$TRT_MAJOR" =~ ^[0-9]+$ ]]; then
    echo "cannot tell which TensorRT $TRTEXEC is: set TRT_MAJOR=10 or TRT_MAJOR=11" >&2; exit 1
fi
if [ "$TRT_MAJOR" -lt %(min)d ]; then
    echo "TensorRT $TRT_MAJOR is too old: these engines need TensorRT %(min)d or newer (%(jetpack)s)" >&2; exit 1
fi
# A Jetson (L4T's release file; NV_TEGRA_RELEASE= names another) with TensorRT 11: say what NVIDIA's 10.x-to-11.x
# Jetson/JetPack migration pages say, and go on (11.4.1 on JetPack 7.2.2+ is a supported pairing).
TEGRA="${NV_TEGRA_RELEASE:-/etc/nv_tegra_release}"
if [ "$TRT_MAJOR" -ge 11 ] && [ -f "$TEGRA" ]; then
    { echo "note: TensorRT $TRT_MAJOR on a Jetson ($TEGRA). NVIDIA's 'Migrating TensorRT from 10.x to 11.x on Jetson/JetPack':"
      echo "  JetPack is not supported in TensorRT 11.2.1, 11.3.0, 11.4.0 and 11.5.0; TensorRT 11.4.1 supports"
      echo "  JetPack 7.2.2 or later on Jetson AGX Orin and Jetson Thor (the Linux SBSA package); Jetson Orin on"
      echo "  JetPack 6.x must remain on the TensorRT 10.x of its JetPack (JetPack 6.1 and 6.2 ship 10.3)."; } >&2
fi
if [ "$TRT_MAJOR" -gt 11 ]; then
    echo "warning: TensorRT $TRT_MAJOR is newer than this script was tested with (10, 11): built as 11 (strongly typed)" >&2
fi
"""

START = r"""
if [ ! -x "$TRTEXEC" ]; then
    if [ -n "$TRTEXEC_GIVEN" ]; then echo "TRTEXEC=$TRTEXEC_GIVEN: not an executable file: point it at trtexec" >&2; exit 1; fi
    echo "trtexec not found (not on PATH nor at $TRTEXEC): install TensorRT (on a Jetson: JetPack) or set TRTEXEC=" >&2
    exit 1
fi
python_of() {  # python_of EXE: the Python that runs EXE, a pip-installed script (polygraphy in a venv): its #! line's
    # interpreter (also #!/usr/bin/env python3, and pip's /bin/sh wrapper for a long path), where that is an executable
    # file named python*; else python3
    local exe line="" py="" w words=() wrap='^.{3}exec. "?([^"]+[^" ])"? "[$]0"'
    exe="$(command -v "$1" 2>/dev/null || true)"
    if [ -n "$exe" ] && [ -f "$exe" ]; then IFS= read -r -n 512 line <"$exe" 2>/dev/null || true; fi
    if [[ "$line" == '#!'* ]]; then
        read -r -a words <<<"${line#??}"
        py="${words[0]:-}"
        if [ "${py##*/}" = env ]; then  # #!/usr/bin/env [-S] python3: the first word that is not an option
            py=""
            for w in "${words[@]:1}"; do
                if [[ "$w" != -* && "$w" != *=* ]]; then py="$(command -v "$w" 2>/dev/null || true)"; break; fi
            done
        elif [ "${py##*/}" = sh ] && [[ "$(sed -n 2p "$exe" 2>/dev/null)" =~ $wrap ]]; then  # '''exec' PY "$0" "$@"
            py="${BASH_REMATCH[1]}"
        fi
    fi
    if [[ "${py##*/}" == python* ]] && [ -f "$py" ] && [ -x "$py" ]; then echo "$py"; else echo python3; fi
}
PYTHON="${PYTHON_GIVEN:-$(python_of "$POLYGRAPHY")}"
BUILT=() AGREE=() CURRENT=""
summary() {  # the last lines: what was built, and each engine's agreement with ONNX Runtime
    echo "built ${#BUILT[@]} engine(s): ${BUILT[*]}"
    for a in ${AGREE[@]+"${AGREE[@]}"}; do echo "  $a"; done
    if [ -n "${LOG:-}" ]; then echo "polygraphy's log: $LOG"; fi
}
failed() {  # set -e stopped the script: say where, and what is (not) in the folder
    local rc=$?
    if [ "$rc" -ne 0 ] && [ -n "$CURRENT" ]; then
        echo "failed (exit $rc) building $CURRENT; built before it: ${BUILT[*]:-none} (no engine of an earlier run is left)" >&2
    fi
}
trap failed EXIT
interrupted() {  # Ctrl-C stops the script. Without this trap bash goes on after a command that handled the SIGINT itself
    # (polygraphy's TensorRT logger turns Ctrl-C into SIGTERM): the check would take the run as the engine's failure
    trap - INT
    echo "interrupted: stopped before the end (no engine moved aside for the run that was interrupted; engines not" \
        "checked yet are unchecked): run ./build_engine.sh again to build and check every engine" >&2
    exit 130
}
trap interrupted INT
sha256() {  # sha256 FILE: its hex sha256 by the first hasher that gives one (sha256sum, shasum -a 256, $PYTHON's hashlib)
    local out
    if command -v sha256sum >/dev/null 2>&1 && out=$(sha256sum "$1" 2>/dev/null | cut -d ' ' -f 1) \
        && [[ "$out" =~ ^[0-9a-f]{64}$ ]]; then echo "$out"; return 0; fi
    if command -v shasum >/dev/null 2>&1 && out=$(shasum -a 256 "$1" 2>/dev/null | cut -d ' ' -f 1) \
        && [[ "$out" =~ ^[0-9a-f]{64}$ ]]; then echo "$out"; return 0; fi
    if out=$("$PYTHON" -c 'import hashlib, sys
h, f = hashlib.sha256(), open(sys.argv[1], "rb")
for block in iter(lambda: f.read(1 << 20), b""): h.update(block)
print(h.hexdigest())' "$1" 2>/dev/null) && [[ "$out" =~ ^[0-9a-f]{64}$ ]]; then echo "$out"; return 0; fi
    return 1
}
NO_HASHER=""
record_source() {  # record_source ENGINE ONNX: ENGINE.source.json, what ENGINE was built from (the edge runner's engine_source)
    local e_sha o_sha
    rm -f "$1.source.json"
    if [ -n "$NO_HASHER" ]; then return 0; fi
    if ! command -v sha256sum >/dev/null 2>&1 && ! command -v shasum >/dev/null 2>&1 \
        && ! command -v "$PYTHON" >/dev/null 2>&1; then
        echo "warning: no sha256 (sha256sum, shasum or $PYTHON): no ENGINE.source.json written;" \
            "the edge runner joins engines by export.json" >&2
        NO_HASHER=1; return 0
    fi
    if ! e_sha=$(sha256 "$1") || ! o_sha=$(sha256 "$2"); then  # one file's failure leaves later engines their record
        echo "warning: cannot hash $1 or $2 (sha256sum, shasum and $PYTHON all missing or failed): no $1.source.json" \
            "written; the edge runner joins it by export.json" >&2
        return 0
    fi
    local version=""
    if [ -n "$TRT_VERSION" ]; then version=", \"trt_version\": \"$TRT_VERSION\""; fi
    printf '{"engine": "%s", "engine_sha256": "%s", "onnx": "%s", "onnx_sha256": "%s", "trt_major": %s%s}\n' \
        "$1" "$e_sha" "$2" "$o_sha" "$TRT_MAJOR" "$version" >"$1.source.json"
}
"""

SMOKE = r"""
# smoke ENGINE BATCH...: trtexec runs ENGINE once at each BATCH, of the profile's distinct batches (min/opt/max:
# %(said)s). At every batch where no polygraphy check runs the engines (no polygraphy, or no calibration images) or
# where polygraphy cannot run TensorRT; after a check, at the batches polygraphy did not run (it runs the opt batch
# where there are that many check images, and a last smaller one). A broken engine, or one that runs out of memory at
# the max batch (a small Jetson), fails here, at build time, not when it is first timed. One trtexec call per batch
# (--shapes takes one shape per input); the log of all of them is kept only if one fails. A failing engine is moved
# aside (ENGINE.failed: the edge runner does not take it, and a long build is not lost to a transient failure such as a
# busy GPU); every engine is run, then one line names the failures and the script fails.
SMOKE_FAILED=()
SMOKE_BATCHES=(%(batches)s)
SMOKE_SHAPES=(%(shapes)s)
smoke() {
    local log="$1.smoke.log" want=" ${*:2} " ran="" i
    : >"$log"
    for i in "${!SMOKE_BATCHES[@]}"; do
        if [[ "$want" != *" ${SMOKE_BATCHES[$i]} "* ]]; then continue; fi
        echo "== batch ${SMOKE_BATCHES[$i]}: trtexec --loadEngine=$1 --shapes=${SMOKE_SHAPES[$i]}" >>"$log"
        if ! "$TRTEXEC" --loadEngine="$1" --shapes="${SMOKE_SHAPES[$i]}" --iterations=1 --warmUp=0 --duration=0 \
            >>"$log" 2>&1; then
            tail -n 20 "$log" >&2
            mv -f "$1" "$1.failed"
            echo "$1 was built but does not run at batch ${SMOKE_BATCHES[$i]} (trtexec --loadEngine=$1" \
                "--shapes=${SMOKE_SHAPES[$i]} --iterations=1 failed; its log: $log): moved aside to $1.failed so it is" \
                "not timed; if the failure was transient (GPU busy), put it back: mv $1.failed $1 (before running" \
                "this script again, which removes it)" >&2
            SMOKE_FAILED+=("$1")
            return 0
        fi
        ran+="${ran:+, }${SMOKE_BATCHES[$i]}"
    done
    rm -f "$log"; echo "$1: ran at batch $ran (trtexec --loadEngine, one inference each)"
}
smoke_each() {  # smoke_each BATCH...: smoke each built engine still in place (one the check moved aside is not)
    local e
    for e in ${BUILT[@]+"${BUILT[@]}"}; do if [ -f "$e" ]; then smoke "$e" "$@"; fi; done
}
smoke_all() {  # every engine at every batch; then, if any failed, one line naming them, and exit 1
    smoke_each "${SMOKE_BATCHES[@]}"
    if [ ${#SMOKE_FAILED[@]} -gt 0 ]; then
        echo "${#SMOKE_FAILED[@]} of ${#BUILT[@]} engine(s) failed to run: ${SMOKE_FAILED[*]} (each moved aside as" \
            "ENGINE.failed, its log ENGINE.smoke.log)" >&2
        exit 1
    fi
}
"""

CHECK = r"""
# Each engine vs ONNX Runtime on the export's calibration images (polygraphy), as top-1 agreement.
# SKIP_CHECK=1 skips it; POLYGRAPHY= and PYTHON= name other executables (POLYGRAPHY=none: no comparison, the engines
# are run by trtexec only, as without polygraphy; PYTHON, which runs tensorrt_check.py, is by default polygraphy's own
# Python: python_of).
# Every engine is checked, whatever failed before it. An engine whose own polygraphy run fails is moved aside as the
# trtexec smoke run does (ENGINE.failed, so the edge runner does not time it; not deleted: the failure may be transient),
# polygraphy's output kept beside it (ENGINE.check.log). ONNX Runtime's run of an ONNX file (the reference) failing is
# not the engine's fault (onnxruntime missing or too old for the file): the comparisons with that file are skipped and
# no engine is moved aside for it, but every engine is still run by polygraphy, so a broken one is still caught. A
# comparison that fails after both runs succeeded (tensorrt_check.py) is named; its engine ran, so it stays in place.
# polygraphy runs the engines at the batches its data loader makes of the check images (full opt batches, then a last
# smaller one): each engine still in place is then run by trtexec (smoke) at the profile's other batches (min, max, and
# opt where there are fewer check images than opt), so one out of memory at the max batch is caught too.
# A polygraphy that cannot run TensorRT at all (on a Jetson: pip-installed in a venv that cannot see JetPack's tensorrt
# Python bindings) would fail on every engine and move every freshly built engine aside. So its failures are not taken
# as the engines' when (a) polygraphy says it cannot import tensorrt (its lazy importer's "Module: 'tensorrt' is
# required but could not be imported", the same in polygraphy 0.47 to 0.53: the executable actually used answers, so
# one engine is enough to tell; no further engine is given to it), or (b) it ran no engine of this build (every one
# failed, for a reason it does not name: e.g. its tensorrt is not the TensorRT trtexec built with; with one engine
# that is its only run, and trtexec decides: where trtexec cannot run any of them either, the engines failed, and
# the last line names them under both). Then no engine is moved aside for polygraphy; each is run by trtexec at
# every batch instead (a broken engine is still caught, moved aside and named), and one line says that polygraphy could
# not run TensorRT, where its log is and how to fix it. The script still exits 1 then, as when ONNX Runtime fails on a
# reference: with polygraphy installed the comparison with ONNX Runtime was asked for and did not happen (an int8
# engine that runs but disagrees would pass unnoticed), but the engines are kept, so they can be timed as they are;
# POLYGRAPHY=none builds without the comparison (exit 0 when trtexec runs every engine), as without polygraphy.
# At the end: the summary, then one line naming every failure, and exit 1.
if [ "${SKIP_CHECK:-0}" = 1 ]; then echo "engine check skipped (SKIP_CHECK=1)"; summary; exit 0; fi
if [ "$POLYGRAPHY" = none ]; then
    echo "engine check skipped (POLYGRAPHY=none): engines not compared with ONNX Runtime; each run by trtexec instead" >&2
    smoke_all; summary; exit 0
fi
if ! command -v "$POLYGRAPHY" >/dev/null 2>&1; then
    echo "polygraphy not found (pip install polygraphy onnxruntime): engines not compared with ONNX Runtime;" \
        "each run by trtexec instead" >&2
    smoke_all; summary; exit 0
fi
rm -rf %(dir)s && mkdir -p %(dir)s
LOG=%(dir)s/polygraphy.log
if [ -n "$PYTHON_GIVEN" ]; then PYTHON_SAID="PYTHON=$PYTHON"
elif [ "$PYTHON" != python3 ]; then PYTHON_SAID="$PYTHON (polygraphy's Python, from its #! line; PYTHON= names another)"
else PYTHON_SAID="python3 (the default: $POLYGRAPHY names no Python in a #! line; PYTHON= names another)"; fi
ENGINE_FAILED=() REF_FAILED=() COMPARE_FAILED=() NO_TRT="" PG_RAN="" NO_MODULE=""  # PG_RAN: a polygraphy run succeeded
SMOKE_AFTER_CHECK=(%(after)s)  # the profile's batches polygraphy does not run (it runs batches of: %(ran)s)
has() {  # has WORD LIST...: WORD is one of LIST
    local w="$1" x
    shift
    for x in "$@"; do if [ "$x" = "$w" ]; then return 0; fi; done
    return 1
}
pg() {  # pg LOGFILE MODEL ARGS...: polygraphy run on the calibration images, its output in LOGFILE and in $LOG
    local log="$1" rc=0
    shift
    "$POLYGRAPHY" run "$@" --data-loader-script %(script)s:load_data >"$log" 2>&1 || rc=$?
    cat "$log" >>"$LOG"
    if [ "$rc" -ne 0 ]; then tail -n 20 "$log" >&2; else PG_RAN=1; fi
    return "$rc"
}
check() {  # check ENGINE ONNX: top-1 agreement of the engine with ONNX Runtime running ONNX; a failure is named, not fatal
    local ref="%(dir)s/ort.${2%%.onnx}.json" out="%(dir)s/trt.${1%%.engine}.json" res
    if [ -n "$NO_TRT" ]; then return 0; fi  # polygraphy cannot import tensorrt: no engine is compared (check_done)
    if [ ! -f "$ref" ] && ! has "$2" ${REF_FAILED[@]+"${REF_FAILED[@]}"} \
        && ! pg "${ref%%.json}.log" "$2" --onnxrt --save-outputs "$ref"; then
        rm -f "$ref"
        REF_FAILED+=("$2")
        echo "ONNX Runtime's run of $2 failed (polygraphy run $2 --onnxrt; its log: ${ref%%.json}.log): no engine is" \
            "compared with it (nor moved aside for it)" >&2
    fi
    if has "$1" ${ENGINE_FAILED[@]+"${ENGINE_FAILED[@]}"}; then return 0; fi  # its own run failed: named once
    if [ ! -f "$out" ]; then
        if ! pg "$1.check.log" "$1" --model-type engine --trt --save-outputs "$out"; then
            rm -f "$out"
            if grep -q "Module: 'tensorrt' is required but could not be imported" "$1.check.log"; then
                NO_TRT=1; rm -f "$1.check.log"  # polygraphy's failure, not the engine's (its output is in $LOG)
                echo "polygraphy cannot run TensorRT: it cannot import tensorrt (TensorRT's Python bindings; its" \
                    "log: $LOG): no engine is compared with ONNX Runtime, none is moved aside for it" >&2
                return 0
            fi
            ENGINE_FAILED+=("$1")  # moved aside by check_done, unless polygraphy ran no engine at all
            return 0
        fi
        rm -f "$1.check.log"
    fi
    if has "$2" ${REF_FAILED[@]+"${REF_FAILED[@]}"}; then return 0; fi
    # polygraphy's own [I]/[W] lines go to $LOG; only the agreement line is printed
    local err="%(dir)s/compare.err" missing
    if ! res="$("$PYTHON" %(script)s "$ref" "$out" --name "$1 vs ONNX Runtime on $2" 2>"$err")"; then
        cat "$err" >>"$LOG"; echo "$res" >>"$LOG"
        missing="$(grep -o -m 1 "No module named '[^']*'" "$err" || true)"
        missing="${missing#No module named }"
        if [ -n "$missing" ]; then  # tensorrt_check.py imports polygraphy and numpy: this Python has not got one
            NO_MODULE="$PYTHON_SAID cannot import $missing"
            echo "comparing $1 with ONNX Runtime on $2 failed: $PYTHON_SAID, which runs %(script)s, cannot import" \
                "$missing: set PYTHON= to a Python that imports polygraphy and numpy (the one polygraphy is installed" \
                "for); see $LOG" >&2
        else
            echo "comparing $1 with ONNX Runtime on $2 failed (python: $PYTHON): see $LOG" >&2
        fi
        COMPARE_FAILED+=("$1 vs $2")
        return 0
    fi
    cat "$err" >>"$LOG"; echo "$res" >>"$LOG"
    res="$(grep 'top-1 agreement' <<<"$res" || true)"
    echo "$res"
    AGREE+=("$res")
}
check_done() {  # trtexec's runs; the summary; then, if anything failed, one line naming every failure, and exit 1
    local line="" no_trt="" c e
    if [ -n "$NO_TRT" ]; then
        no_trt="polygraphy could not run TensorRT: it cannot import tensorrt, TensorRT's Python bindings"
    elif [ ${#ENGINE_FAILED[@]} -gt 0 ] && [ ${#ENGINE_FAILED[@]} -eq ${#BUILT[@]} ] && [ -z "$PG_RAN" ]; then
        no_trt="polygraphy failed on every run, ONNX Runtime's too (its Python, or its data loader: see $LOG), so"
        no_trt+=" its failure is not taken as the engines'"
    elif [ ${#ENGINE_FAILED[@]} -gt 0 ] && [ ${#ENGINE_FAILED[@]} -eq ${#BUILT[@]} ]; then
        no_trt="polygraphy ran no engine: it failed on every one (${#BUILT[@]} of ${#BUILT[@]}, for a reason it does"
        no_trt+=" not name: see each ENGINE.check.log), so its failure is not taken as theirs (where trtexec runs them,"
        no_trt+=" its tensorrt is likely not the TensorRT ${TRT_VERSION:-$TRT_MAJOR} trtexec built with, or cannot use"
        no_trt+=" the GPU)"
    fi
    if [ -n "$no_trt" ]; then  # polygraphy's failure: every engine still in place, run by trtexec at every batch
        if [ -z "$NO_TRT" ]; then echo "$no_trt: no engine moved aside for it; each run by trtexec instead" >&2; fi
        smoke_each "${SMOKE_BATCHES[@]}"
        if [ -z "$NO_TRT" ] && [ ${#SMOKE_FAILED[@]} -eq ${#BUILT[@]} ]; then
            no_trt=""  # trtexec cannot run them either: the engines failed, not polygraphy (both named below)
        else
            ENGINE_FAILED=()
        fi
    else
        for e in ${ENGINE_FAILED[@]+"${ENGINE_FAILED[@]}"}; do
            mv -f "$e" "$e.failed"
            echo "$e was built but does not run under polygraphy (polygraphy run $e --trt failed; its log:" \
                "$e.check.log): moved aside to $e.failed so it is not timed; if the failure was not the engine's" \
                "(GPU busy), put it back: mv $e.failed $e (before running this script again, which removes it)" >&2
        done
        if [ ${#SMOKE_AFTER_CHECK[@]} -gt 0 ]; then smoke_each "${SMOKE_AFTER_CHECK[@]}"; fi
    fi
    summary
    if [ ${#ENGINE_FAILED[@]} -gt 0 ]; then
        line="${#ENGINE_FAILED[@]} of ${#BUILT[@]} engine(s) failed to run under polygraphy: ${ENGINE_FAILED[*]} (each"
        line+=" moved aside as ENGINE.failed, its log ENGINE.check.log)"
    fi
    if [ ${#SMOKE_FAILED[@]} -gt 0 ]; then
        line+="${line:+; }${#SMOKE_FAILED[@]} of ${#BUILT[@]} engine(s) failed to run under trtexec: ${SMOKE_FAILED[*]}"
        line+=" (each moved aside as ENGINE.failed, its log ENGINE.smoke.log)"
    fi
    if [ ${#REF_FAILED[@]} -gt 0 ]; then
        line+="${line:+; }ONNX Runtime failed on ${REF_FAILED[*]} (no engine compared with it)"
    fi
    if [ ${#COMPARE_FAILED[@]} -gt 0 ]; then
        line+="${line:+; }comparison failed:"
        for c in "${COMPARE_FAILED[@]}"; do line+=" $c,"; done
        line="${line%%,}"
        if [ -n "$NO_MODULE" ]; then line+=" ($NO_MODULE: set PYTHON= to a Python that imports polygraphy and numpy)"; fi
    fi
    if [ -n "$no_trt" ]; then
        line+="${line:+; }$no_trt, so no engine was compared with ONNX Runtime; the engines ran under trtexec instead"
        line+=" and none was moved aside for polygraphy; fix: install polygraphy for a Python that imports the"
        line+=" tensorrt of this TensorRT (on a Jetson: JetPack's python3-libnvinfer, for JetPack's python3 or a venv"
        line+=" made with --system-site-packages) or point POLYGRAPHY= at one, then rerun (a rebuild);"
        line+=" POLYGRAPHY=none builds without the comparison"
    fi
    if [ -n "$line" ]; then echo "engine check failed: $line; polygraphy's log: $LOG" >&2; exit 1; fi
}
"""
