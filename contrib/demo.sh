#!/bin/sh
# SPDX-License-Identifier: MIT
# Quick start, part 1: install what is missing, build, generate small demo
# models (a Llama-shaped base and two fine-tunes of it), merge two with
# examples/slerp.yml through the daemon (mergectl submit starts a personal
# merged if none runs), and print where the result is.
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
# A second fine-tune, for the examples that merge several (examples/).
[ -d demo/llama-tuned2 ] ||
	$gen --family llama --out demo/llama-tuned2 --layers 4 --hidden 256 \
	    --intermediate 768 --vocab 1000 --seed 3 --finetune-of 1 \
	    --delta 0.01
# Two LoRA adapters of the base, for examples/lora.yml.
[ -d demo/lora-chat ] ||
	$gen --family llama --out demo/lora-chat --layers 4 --hidden 256 \
	    --intermediate 768 --vocab 1000 --seed 11 --lora 8 \
	    --lora-targets q_proj,k_proj,v_proj,o_proj
[ -d demo/lora-code ] ||
	$gen --family llama --out demo/lora-code --layers 4 --hidden 256 \
	    --intermediate 768 --vocab 1000 --seed 12 --lora 16 \
	    --lora-targets gate_proj,up_proj,down_proj --rslora

ctl=build/client/mergectl
job=$($ctl submit examples/slerp.yml -o demo/merged --force --quiet)
echo "demo: submitted job $job to merged; watching it"
$ctl watch "$job"
$ctl status "$job"
echo "demo: the merged model is in $(pwd)/demo/merged"
ls -l demo/merged
echo "demo: the daemon keeps running for more jobs ('$ctl list');"
echo "demo: stop it with '$ctl daemon stop'"
