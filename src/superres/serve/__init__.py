"""`superres serve`: a local web page for upscaling, built on Starlette and uvicorn (the `serve`
extra). `app` holds the routes and the server runners, `jobs` the queue and its worker, `static/`
the page itself (one HTML, one JS and one CSS file, shipped as package data)."""
