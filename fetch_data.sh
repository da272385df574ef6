#!/usr/bin/env bash
# Fetch the datasets used by pymeta into ${DATA_DIR:-datasets} (relative to the current folder).
#
#   bash fetch_data.sh [omniglot|miniimagenet|all] [--require-miniimagenet]     (default: all)
#
# Omniglot: downloads images_background.zip and images_evaluation.zip from
#   ${OMNIGLOT_BASE_URL:-https://github.com/brendenlake/omniglot/raw/master/python} (http(s):// or file://)
#   and unpacks them to $DATA_DIR/omniglot/images_{background,evaluation}/<Alphabet>/<characterNN>/*.png.
#   OMNIGLOT_SRC=<folder holding images_background/ and images_evaluation/> links an already unpacked
#   copy into place instead of downloading.
#   Counts are checked (override for tests): OMNIGLOT_BACKGROUND_CHARS=964 OMNIGLOT_BACKGROUND_IMAGES=19280
#   OMNIGLOT_EVALUATION_CHARS=659 OMNIGLOT_EVALUATION_IMAGES=13180.
# Mini-ImageNet: cannot be downloaded automatically. Set MINIIMAGENET_SRC to what you downloaded:
#   (a) a folder with archives + train.csv val.csv test.csv (e.g. images_{train,val,test}.tar.xz of images/*.jpg),
#   (b) one archive (.tar .tar.gz .tgz .tar.bz2 .tar.xz .zip) holding (a), (c) or (d),
#   (c) a folder with images/ + train.csv val.csv test.csv (columns filename,label), or
#   (d) a folder with train/ val/ test/ each holding <wnid>/*.jpg.
#   Archives are unpacked safely into $DATA_DIR/miniimagenet by scripts/fetch_miniimagenet.py (run with
#   ${PYTHON:-python3}): no member may land outside it, links, devices and truncated or corrupt archives are
#   refused. Folders (c)/(d) are linked (MINIIMAGENET_COPY=1: copied). Counts checked: MINIIMAGENET_TRAIN_CLASSES=64
#   MINIIMAGENET_VAL_CLASSES=16 MINIIMAGENET_TEST_CLASSES=20 MINIIMAGENET_IMAGES_PER_CLASS=600 (0: any number).
#   Without MINIIMAGENET_SRC, instructions are printed and the script still exits 0, unless
#   --require-miniimagenet is given.
#
# Idempotent: complete data is left alone. Downloads go to a temporary file and archives are unpacked to a
# temporary folder that is renamed into place only after its counts were checked (Mini-ImageNet: with a
# completion marker, $DATA_DIR/miniimagenet/.pymeta_complete, written last).
# Next steps: python scripts/make_omniglot_dataset.py; python scripts/make_miniimagenet_dataset.py
set -euo pipefail

DATA_DIR="${DATA_DIR:-datasets}"
OMNIGLOT_BASE_URL="${OMNIGLOT_BASE_URL:-https://github.com/brendenlake/omniglot/raw/master/python}"
OMNIGLOT_BACKGROUND_CHARS="${OMNIGLOT_BACKGROUND_CHARS:-964}"
OMNIGLOT_BACKGROUND_IMAGES="${OMNIGLOT_BACKGROUND_IMAGES:-19280}"
OMNIGLOT_EVALUATION_CHARS="${OMNIGLOT_EVALUATION_CHARS:-659}"
OMNIGLOT_EVALUATION_IMAGES="${OMNIGLOT_EVALUATION_IMAGES:-13180}"
MINIIMAGENET_TRAIN_CLASSES="${MINIIMAGENET_TRAIN_CLASSES:-64}"
MINIIMAGENET_VAL_CLASSES="${MINIIMAGENET_VAL_CLASSES:-16}"
MINIIMAGENET_TEST_CLASSES="${MINIIMAGENET_TEST_CLASSES:-20}"
MINIIMAGENET_IMAGES_PER_CLASS="${MINIIMAGENET_IMAGES_PER_CLASS:-600}"
PYTHON="${PYTHON:-python3}"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
OMNIGLOT_LOCAL_HINT="without network, use local copies: OMNIGLOT_SRC=<folder holding images_background/ and \
images_evaluation/> bash fetch_data.sh omniglot (links them), or OMNIGLOT_BASE_URL=file://<folder holding \
images_background.zip and images_evaluation.zip> bash fetch_data.sh omniglot"

WHAT=all
REQUIRE_MINI=0
for arg in "$@"; do
    case "$arg" in
        omniglot|miniimagenet|all) WHAT="$arg" ;;
        --require-miniimagenet) REQUIRE_MINI=1 ;;
        -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
        *) echo "fetch_data.sh: unknown argument '$arg' (use omniglot, miniimagenet, all, --require-miniimagenet)" >&2
           exit 2 ;;
    esac
done

log() { echo "[fetch_data] $*"; }
die() { echo "[fetch_data] ERROR: $*" >&2; exit 1; }

TMP_PATHS=()
cleanup() {
    local p
    for p in "${TMP_PATHS[@]+"${TMP_PATHS[@]}"}"; do
        if [ -L "$p" ]; then
            rm -f -- "$p"
        elif [ -e "$p" ]; then
            chmod -R u+w -- "$p" 2>/dev/null || true
            rm -rf -- "$p"
        fi
    done
    return 0
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# count_tree DIR -> prints "<number of <a>/<c> folders> <number of .png files>"
count_tree() {
    local chars imgs
    chars=$(find -L "$1" -mindepth 2 -maxdepth 2 -type d ! -name '.*' | wc -l) || true
    imgs=$(find -L "$1" -mindepth 3 -maxdepth 3 -type f -iname '*.png' | wc -l) || true
    echo "$((chars)) $((imgs))"
}

download() {  # download URL DEST (DEST written only when complete); 1 on failure, with nothing printed
    local url="$1" dest="$2" part="$2.part.$$"
    TMP_PATHS+=("$part")
    if command -v curl >/dev/null 2>&1; then
        curl -fsL --retry 3 -o "$part" "$url" 2>/dev/null || return 1
    elif [[ "$url" == file://* ]]; then
        cp -- "${url#file://}" "$part" 2>/dev/null || return 1
    elif command -v wget >/dev/null 2>&1; then
        wget -q --tries=3 -O "$part" "$url" 2>/dev/null || return 1
    else
        die "neither curl nor wget is installed; $OMNIGLOT_LOCAL_HINT"
    fi
    mv -f -- "$part" "$dest"
}

unpack() {  # unpack ZIP DIR
    if command -v unzip >/dev/null 2>&1; then
        unzip -q "$1" -d "$2" || return 1
    else
        python3 -m zipfile -e "$1" "$2" || return 1
    fi
    rm -rf -- "$2/__MACOSX"
}

fetch_omniglot_part() {  # fetch_omniglot_part NAME EXPECTED_CHARS EXPECTED_IMAGES
    local name="$1" want_chars="$2" want_imgs="$3"
    local dest="$DATA_DIR/omniglot/$name" counts tmp
    if [ -e "$dest" ] || [ -L "$dest" ]; then
        counts=$(count_tree "$dest")
        if [ "$counts" = "$want_chars $want_imgs" ]; then
            log "omniglot/$name already complete ($want_chars characters, $want_imgs images), skipping"
            return 0
        fi
        die "$dest exists but is incomplete (found characters/images: $counts, expected $want_chars $want_imgs); remove it and run again"
    fi
    tmp=$(mktemp -d "$DATA_DIR/omniglot/.tmp.$name.XXXXXX")
    TMP_PATHS+=("$tmp")
    if [ -n "${OMNIGLOT_SRC:-}" ]; then
        [ -d "$OMNIGLOT_SRC/$name" ] || die "OMNIGLOT_SRC=$OMNIGLOT_SRC has no $name/ folder"
        counts=$(count_tree "$OMNIGLOT_SRC/$name")
        [ "$counts" = "$want_chars $want_imgs" ] ||
            die "$OMNIGLOT_SRC/$name has characters/images $counts, expected $want_chars $want_imgs"
        ln -s "$(cd "$OMNIGLOT_SRC/$name" && pwd -P)" "$tmp/$name"
        mv -- "$tmp/$name" "$dest"
        log "omniglot/$name linked from $OMNIGLOT_SRC/$name"
        return 0
    fi
    log "downloading $OMNIGLOT_BASE_URL/$name.zip"
    download "$OMNIGLOT_BASE_URL/$name.zip" "$tmp/$name.zip" ||
        die "cannot download $OMNIGLOT_BASE_URL/$name.zip (no network?); $OMNIGLOT_LOCAL_HINT"
    mkdir "$tmp/x"
    unpack "$tmp/$name.zip" "$tmp/x" || die "cannot unpack $name.zip (corrupt or incomplete download?)"
    [ -d "$tmp/x/$name" ] || die "$name.zip does not contain a top-level $name/ folder"
    counts=$(count_tree "$tmp/x/$name")
    [ "$counts" = "$want_chars $want_imgs" ] ||
        die "$name.zip unpacked to characters/images $counts, expected $want_chars $want_imgs"
    mv -- "$tmp/x/$name" "$dest"
    log "omniglot/$name: $want_chars characters, $want_imgs images"
}

fetch_omniglot() {
    mkdir -p "$DATA_DIR/omniglot"
    fetch_omniglot_part images_background "$OMNIGLOT_BACKGROUND_CHARS" "$OMNIGLOT_BACKGROUND_IMAGES"
    fetch_omniglot_part images_evaluation "$OMNIGLOT_EVALUATION_CHARS" "$OMNIGLOT_EVALUATION_IMAGES"
    log "omniglot ready in $DATA_DIR/omniglot; next: python scripts/make_omniglot_dataset.py -i $DATA_DIR/omniglot"
}

mini_instructions() {
    cat <<EOF
[fetch_data] Mini-ImageNet is not downloaded automatically (ImageNet licence terms).
  Get it by hand (Ravi & Larochelle split: 64 / 16 / 20 classes x 600 images) as any of
    (a) a folder with the image archives and train.csv val.csv test.csv (e.g. images_{train,val,test}.tar.xz
        holding images/*.jpg; every .tar .tar.gz .tgz .tar.bz2 .tar.xz .zip in it is unpacked);
    (b) one archive (.tar .tar.gz .tgz .tar.bz2 .tar.xz .zip) holding (a), (c) or (d);
    (c) a folder with images/*.jpg plus train.csv val.csv test.csv (columns filename,label; the CSV files
        come with the meta-learning-lstm code of Ravi & Larochelle);
    (d) a folder with train/ val/ test/, each holding <wnid>/*.jpg.
  Then run:
    MINIIMAGENET_SRC=/path/to/that/folder/or/archive bash fetch_data.sh miniimagenet
  which unpacks archives (safely) or links folders (MINIIMAGENET_COPY=1: copies them) into
  $DATA_DIR/miniimagenet/, and then
    python scripts/make_miniimagenet_dataset.py
  to write the dataset file into $DATA_DIR/miniimagenet/.
EOF
}

fetch_miniimagenet() {
    local src="${MINIIMAGENET_SRC:-}" rc=0
    command -v "$PYTHON" >/dev/null 2>&1 || die "Mini-ImageNet needs Python 3 ('$PYTHON' not found; set PYTHON)"
    if [ -n "$src" ] && [ ! -e "$src" ]; then
        log "MINIIMAGENET_SRC=$src does not exist"
        src=""
    fi
    "$PYTHON" "$HERE/scripts/fetch_miniimagenet.py" --dest "$DATA_DIR/miniimagenet" ${src:+--src "$src"} \
        --classes "$MINIIMAGENET_TRAIN_CLASSES" "$MINIIMAGENET_VAL_CLASSES" "$MINIIMAGENET_TEST_CLASSES" \
        --images-per-class "$MINIIMAGENET_IMAGES_PER_CLASS" \
        $([ "${MINIIMAGENET_COPY:-0}" = 1 ] && echo --copy) || rc=$?
    case "$rc" in
        0) ;;
        3) mini_instructions
           [ "$REQUIRE_MINI" = 0 ] || die "Mini-ImageNet is required (--require-miniimagenet) but not available" ;;
        *) exit "$rc" ;;  # the helper has printed the one-line error
    esac
}

mkdir -p "$DATA_DIR"
case "$WHAT" in
    omniglot) fetch_omniglot ;;
    miniimagenet) fetch_miniimagenet ;;
    all) fetch_omniglot; fetch_miniimagenet ;;
esac
