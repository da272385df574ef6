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
# Mini-ImageNet: cannot be downloaded automatically. Set MINIIMAGENET_SRC to a folder in either layout
#   (a) train/ val/ test/ each holding <wnid>/*.jpg, or (b) images/ + train.csv val.csv test.csv
#   (columns filename,label); it is linked (MINIIMAGENET_COPY=1: copied) into $DATA_DIR/miniimagenet.
#   Class counts checked: MINIIMAGENET_TRAIN_CLASSES=64 MINIIMAGENET_VAL_CLASSES=16 MINIIMAGENET_TEST_CLASSES=20.
#   Without MINIIMAGENET_SRC, instructions are printed and the script still exits 0, unless
#   --require-miniimagenet is given.
#
# Idempotent: complete data is left alone. Downloads go to a temporary file and archives are unpacked to a
# temporary folder that is renamed into place only after its counts were checked.
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

download() {  # download URL DEST (DEST written only when complete)
    local url="$1" dest="$2" part="$2.part.$$"
    TMP_PATHS+=("$part")
    if command -v curl >/dev/null 2>&1; then
        curl -fsSL --retry 3 -o "$part" "$url" || die "download failed: $url"
    elif [[ "$url" == file://* ]]; then
        cp -- "${url#file://}" "$part" || die "download failed: $url"
    elif command -v wget >/dev/null 2>&1; then
        wget -q --tries=3 -O "$part" "$url" || die "download failed: $url"
    else
        die "neither curl nor wget is installed"
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
    download "$OMNIGLOT_BASE_URL/$name.zip" "$tmp/$name.zip"
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
  Get it by hand, in either layout:
    (a) a folder with train/ val/ test/, each holding <wnid>/*.jpg (64 / 16 / 20 classes, 600 images each);
    (b) a folder with images/*.jpg plus train.csv val.csv test.csv (Ravi & Larochelle split, columns
        filename,label; the CSV files come with the meta-learning-lstm code of Ravi & Larochelle, the
        images are ILSVRC-2012 images, usually distributed as images.zip).
  Then run:
    MINIIMAGENET_SRC=/path/to/that/folder bash fetch_data.sh miniimagenet
  which links it (MINIIMAGENET_COPY=1: copies it) into $DATA_DIR/miniimagenet/, and then
    python scripts/make_miniimagenet_dataset.py
  to write $DATA_DIR/miniimagenet/miniimagenet.pkl.
EOF
}

n_subdirs() { find -L "$1" -mindepth 1 -maxdepth 1 -type d ! -name '.*' | wc -l || true; }

check_split_folders() {  # check_split_folders ROOT -> dies unless train/val/test hold the expected classes
    local root="$1" split want got empty
    for split in train val test; do
        case $split in train) want=$MINIIMAGENET_TRAIN_CLASSES ;; val) want=$MINIIMAGENET_VAL_CLASSES ;;
                       test) want=$MINIIMAGENET_TEST_CLASSES ;; esac
        [ -d "$root/$split" ] || die "$root/$split is missing"
        got=$(n_subdirs "$root/$split")
        [ "$((got))" -eq "$want" ] || die "$root/$split has $((got)) class folders, expected $want"
        empty=$(find -L "$root/$split" -mindepth 1 -maxdepth 1 -type d -empty -print -quit)
        [ -z "$empty" ] || die "empty class folder: $empty"
    done
}

check_csv_layout() {  # check_csv_layout ROOT
    local root="$1" split want got rows=0 n imgs first
    [ -d "$root/images" ] || die "$root/images is missing"
    for split in train val test; do
        case $split in train) want=$MINIIMAGENET_TRAIN_CLASSES ;; val) want=$MINIIMAGENET_VAL_CLASSES ;;
                       test) want=$MINIIMAGENET_TEST_CLASSES ;; esac
        [ -f "$root/$split.csv" ] || die "$root/$split.csv is missing"
        IFS= read -r first < "$root/$split.csv" || true
        [ "${first%$'\r'}" = "filename,label" ] || die "$root/$split.csv: first line must be 'filename,label'"
        got=$(tail -n +2 "$root/$split.csv" | tr -d '\r' | grep -v '^$' | cut -d, -f2 | sort -u | wc -l)
        [ "$((got))" -eq "$want" ] || die "$root/$split.csv has $((got)) classes, expected $want"
        n=$(tail -n +2 "$root/$split.csv" | tr -d '\r' | grep -vc '^$' || true)
        rows=$((rows + n))
    done
    imgs=$(find -L "$root/images" -type f \( -iname '*.jpg' -o -iname '*.jpeg' -o -iname '*.png' \) | wc -l)
    [ "$((imgs))" -ge "$rows" ] || die "$root/images has $((imgs)) images but the CSV files list $rows"
}

place() {  # place SRC DEST: symlink (or copy with MINIIMAGENET_COPY=1) atomically
    local src="$1" dest="$2" tmp
    tmp=$(mktemp -d "$(dirname "$dest")/.tmp.$(basename "$dest").XXXXXX")
    TMP_PATHS+=("$tmp")
    if [ "${MINIIMAGENET_COPY:-0}" = 1 ]; then
        cp -R -- "$src" "$tmp/item"
    else
        ln -s "$(cd "$(dirname "$src")" && pwd -P)/$(basename "$src")" "$tmp/item"
    fi
    mv -- "$tmp/item" "$dest"
}

fetch_miniimagenet() {
    local dest="$DATA_DIR/miniimagenet" src layout item
    if [ -d "$dest/train" ] && [ -d "$dest/val" ] && [ -d "$dest/test" ]; then
        check_split_folders "$dest"
        log "miniimagenet already in place in $dest (train/ val/ test/ layout), skipping"
        return 0
    fi
    if [ -d "$dest/images" ] && [ -f "$dest/train.csv" ] && [ -f "$dest/val.csv" ] && [ -f "$dest/test.csv" ]; then
        check_csv_layout "$dest"
        log "miniimagenet already in place in $dest (images/ + csv layout), skipping"
        return 0
    fi
    src="${MINIIMAGENET_SRC:-}"
    if [ -z "$src" ] || [ ! -d "$src" ]; then
        [ -z "$src" ] || log "MINIIMAGENET_SRC=$src is not a folder"
        mini_instructions
        [ "$REQUIRE_MINI" = 0 ] || die "Mini-ImageNet is required (--require-miniimagenet) but not available"
        return 0
    fi
    mkdir -p "$dest"
    if [ -d "$src/train" ] && [ -d "$src/val" ] && [ -d "$src/test" ]; then
        layout=folders
        check_split_folders "$src"
        for item in train val test; do
            if [ -e "$dest/$item" ] || [ -L "$dest/$item" ]; then
                die "$dest/$item exists but the data there is incomplete; remove it and run again"
            fi
        done
        for item in train val test; do place "$src/$item" "$dest/$item"; done
    elif [ -d "$src/images" ] || [ -f "$src/train.csv" ]; then
        layout=csv
        check_csv_layout "$src"
        for item in images train.csv val.csv test.csv; do
            if [ -e "$dest/$item" ] || [ -L "$dest/$item" ]; then
                die "$dest/$item exists but the data there is incomplete; remove it and run again"
            fi
        done
        for item in images train.csv val.csv test.csv; do place "$src/$item" "$dest/$item"; done
    else
        mini_instructions
        die "MINIIMAGENET_SRC=$src has neither train/ val/ test/ nor images/ + train.csv val.csv test.csv"
    fi
    log "miniimagenet ($layout layout) placed in $dest; next: python scripts/make_miniimagenet_dataset.py -i $dest"
}

mkdir -p "$DATA_DIR"
case "$WHAT" in
    omniglot) fetch_omniglot ;;
    miniimagenet) fetch_miniimagenet ;;
    all) fetch_omniglot; fetch_miniimagenet ;;
esac
