"""Tools above the decoding core: the command line (``cli.py``), the demo, the benchmark harness
(``bench/``), draft training (``train/``), OPT-Tree auto's latency profiler (``profile.py``) and
Sequoia's acceptance measurement (``sequoia_measure.py``). The core never imports them."""
