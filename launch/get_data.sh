#!/usr/bin/env bash
# Fetches the public data lamina's configs and tests use, into DIR (default $LAMINA_DATA, else
# ./datasets: ./data would mix with the source folder of that name), in the layout
# every command expects:
#
#   DIR/vocab/bert-base-uncased-vocab.txt           BERT uncased WordPiece vocab (30,522 tokens)
#   DIR/glue/MRPC/{train,dev,test}.tsv              GLUE MRPC (Microsoft Research Paraphrase Corpus)
#   DIR/glue/RTE/{train,dev,test}.tsv               GLUE RTE
#   DIR/enwiki-2015-wikiextractor/wiki_*.txt.xz     English Wikipedia as WikiExtractor <doc> text
#   DIR/wikitext-2/{valid,test}.txt                 WikiText-2 (optional)
#
# Sources (needs a network; the MRPC licence forbids redistributing it, so lamina never ships it):
#   vocab:     https://huggingface.co/bert-base-uncased/resolve/main/vocab.txt
#   GLUE:      the GLUE benchmark's download script (https://github.com/nyu-mll/GLUE-baselines,
#              download_glue_data.py --tasks MRPC,RTE); MRPC needs the MSRP files it names
#   Wikipedia: a dump from https://dumps.wikimedia.org/enwiki/ turned into text with WikiExtractor
#              (https://github.com/attardi/wikiextractor), then `xz` per output file
#
#   launch/get_data.sh [DIR]
set -euo pipefail
dir=${1:-${LAMINA_DATA:-datasets}}
mkdir -p "$dir/vocab" "$dir/glue"
fetch() {  # url dest
  if [ -s "$2" ]; then echo "have $2"; return; fi
  echo "fetching $1"
  curl -fL --retry 3 -o "$2.part" "$1" && mv "$2.part" "$2"
}
if ! fetch https://huggingface.co/bert-base-uncased/resolve/main/vocab.txt "$dir/vocab/bert-base-uncased-vocab.txt"; then
  echo "get_data.sh: could not download the vocab (no network?). Put the files in the layout above by hand." >&2
  exit 1
fi
if [ ! -s "$dir/glue/RTE/dev.tsv" ]; then
  tmp=$(mktemp -d)
  fetch https://raw.githubusercontent.com/nyu-mll/GLUE-baselines/master/download_glue_data.py "$tmp/download_glue_data.py"
  python3 "$tmp/download_glue_data.py" --data_dir "$dir/glue" --tasks MRPC,RTE
  rm -rf "$tmp"
fi
cat <<MSG
Done with the vocab and GLUE. Wikipedia text is large: build it with WikiExtractor from a dump
(see the header of this script), xz each output file, and put them in $dir/enwiki-2015-wikiextractor/.
Then: ./launch/quickstart.sh --data $dir
MSG
