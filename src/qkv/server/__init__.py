"""`qkv serve`: a local web playground for trained runs, and the pages of human evaluation.

    qkv serve runs/shakespeare runs/multi30k --db human-eval.db

    from qkv.server import ServeConfig, create_app, load_runs
    app = create_app(load_runs(["runs/shakespeare"]), ServeConfig())   # a FastAPI app; uvicorn.run(app)

- `qkv.server.app`: the application — limits, error answers (JSON 4xx), security headers, the static pages;
- `qkv.server.served`: the runs, each loaded once (`qkv.load_run`) with its name, pages and worker;
- `qkv.server.workers`: one generation worker per model, a bounded queue (429 when full), jobs that stream
  back to the request and stop when their client leaves;
- `qkv.server.playground`: the API the pages call (generate and chat as server-sent events, translate with
  its n-best list and cross-attention, images with both diffusion processes, attention, parameters);
- `qkv.server.rating`: the rater's page and API, and the admin's report (`qkv.humaneval`);
- `qkv.server.schemas`: the request bodies, typed and bounded;
- ``static/``: plain HTML, CSS and JavaScript — no build step, nothing from a CDN.

FastAPI and uvicorn are the ``web`` extra (``pip install 'qkv[web]'``); nothing else in qkv imports this package.
"""

from qkv.server.app import ServeConfig, create_app
from qkv.server.served import Served, load_runs

__all__ = ["ServeConfig", "Served", "create_app", "load_runs"]
