#!/bin/sh
# SPDX-License-Identifier: MIT
# Quick start, part 1: install what is missing, build, generate two small
# demo models (a Llama-shaped base and a fine-tune of it), merge them with
# examples/slerp.yml, and print where the result is.
set -eu
cd "$(dirname "$0")/.."

contrib/deps.sh
[ -d build ] || meson setup build --wrap-mode=nodownload >/dev/null
ninja -C build >/dev/null

gen=build/contrib/genmodel/genmodel
mkdir -p demo
[ -d demo/llama-base ] ||
	$gen --family llama --out demo/llama-base --layers 4 --hidden 256 \
	    --intermediate 768 --vocab 1000 --seed 1
[ -d demo/llama-tuned ] ||
	$gen --family llama --out demo/llama-tuned --layers 4 --hidden 256 \
	    --intermediate 768 --vocab 1000 --seed 2 --finetune-of 1 \
	    --delta 0.01

build/client/mergectl run examples/slerp.yml demo/merged --force \
    --memory 256M
echo "demo: the merged model is in $(pwd)/demo/merged"
ls -l demo/merged
