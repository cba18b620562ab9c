# Shared by the study queues (studies/*.sh): data preparation, queue lines, and a runner that keeps $JOBS one-thread
# train.py runs going. Source it from the repo root.
JOBS=${JOBS:-2}

# prepare_tinystories DIR: TinyStories tokens in DIR and DIR_top4096 (the 4,095 most frequent tokens + <unk>), from
# $SOURCE (a local TinyStories text file or folder) or, when SOURCE is empty, the embedded sample.
prepare_tinystories() {
  local dir=$1
  if [ -n "${SOURCE:-}" ]; then
    python data/tinystories/prepare.py --source "$SOURCE" --out_dir "$dir"
  else
    python data/tinystories/prepare.py --sample --out_dir "$dir"
  fi
  python -m data.reduce_vocab "$dir" --vocab 4096
}

# job DIR ARGS...: one queue line. Skips a finished run (its metrics.jsonl has the final record); otherwise trains
# with one thread (train.log beside the metrics) and deletes the checkpoints afterwards.
job() {
  local dir=$1; shift
  local args; args=$(printf '%q ' "$@")  # each argument quoted for the bash -c of run_queue
  echo "grep -q '\"kind\": \"final\"' $dir/metrics.jsonl 2>/dev/null || { mkdir -p $dir && OMP_NUM_THREADS=1" \
       "python train.py ${args}--out_dir=$dir > $dir/train.log 2>&1; rm -f $dir/*.pt; echo \$(date +%T) done $dir; }"
}

# run_queue FILE: the lines of FILE, $JOBS at a time.
run_queue() {
  xargs -d "\n" -P "$JOBS" -I{} bash -c {} < "$1"
}
