"""The toolkit's library, one folder per concern, in two layers.

Bottom (used by everything, including helper_functions.py, matching_strategies.py, pck.py, models/ and the
dataset loaders; imports nothing above it):
    config/    settings as frozen data; the protocols table
    data/      images, the pair record, datasets by name, custom pairs, pixel <-> input <-> patch geometry
    storage/   atomic writes, hashing, the feature cache

Top (uses the bottom layer and the modules at the repository root):
    cli/       flags, where arguments become settings (resolve.py), how a script ends
    engine/    the flow: members' features, matching, evaluation, grid search, weight search, single pair
    runs/      results folders (format, record of a run, metrics.json)
    report/    printed summaries, tables, published numbers, paper tables, comparisons
    viz/       drawing primitives, figures, charts, the match explorer
    download/  what can be downloaded, and how it is fetched, checked and unpacked
"""
