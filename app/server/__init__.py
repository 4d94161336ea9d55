"""The HTTP server under gunicorn: the worker class, uvicorn's protocol with the limits it lacks,
load shedding, and model releases in the master."""
