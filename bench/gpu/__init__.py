"""The GPU bench's parts; bench/gpu_train_bench.py is its command line, bench/gpu/run.sh its kit.

- plan.py:        the recipe both ResNet-20 sides train, the plan of a run, the sides' limits,
                  the tiny archive (--tiny) and the stretch side's epochs;
- orchestrate.py: the sides one after the other, each in its own process, under one deadline;
- reference.py:   the bare Keras-on-JAX ResNet-20, the reference the stage is measured against;
- stage.py:       the sides that run our code: prepare, the train stage (cold and warm), the
                  stretch model's probe and its training;
- measure.py:     what the sides share: device, per-epoch times, the prepared arrays;
- report.py:      gpu_bench.json, the ratios and the summary table;
- sides.py:       one side, in the child process the orchestrator starts.

The orchestrator's modules (plan, orchestrate, report) import neither JAX nor Keras: a child
must find the GPU's memory free.
"""
