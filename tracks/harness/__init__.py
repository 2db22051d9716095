"""The machinery that runs the numbered tracks (none of it is a track).

- :mod:`.base`: the track contract (``TrackSpec``, ``Criterion``, ``TrackContext``, ``TrackResult``);
- :mod:`.config`: typed track configs (frozen dataclasses, ``QUICK`` / ``FULL``) and ``--set`` validation;
- :mod:`.registry`: discovery of ``tracks/tNN_slug.py`` modules, ``get_track``;
- :mod:`.runner`: runs tracks, writes ``results.json``; :mod:`.report`: ``report.md``;
- :mod:`.machine`: machine description; :mod:`.commands`: library side of ``export`` / ``sweep``;
- shared helpers: :mod:`.stats` (Student-t CI), :mod:`.plots` (one figure helper),
  :mod:`.threads` (torch thread limiter).
"""
