"""The teaching views: what the notebooks show, drawn from measured data.

Each `*_figure` takes measured data and returns a matplotlib Figure. By notebook:
build_views (01: build-record charts, the jpeg-decoder listing), module_views (02: sections,
imports/exports tables, the interface as WAT, the hand-written tiny module), memviz (03:
page maps, hex dumps, the article's stages replayed), prediction_charts (04),
timing_charts (05), server_charts (06), profile_charts (07); widgets (the ipywidgets of
03 and 04); style (PNG rendering and the shared colours); render (`make figures`: the same
charts written to docs/figures/ for the README).
"""
