"""The operator dashboard: a page at /dashboard (plain HTML, JS and CSS shipped in `static/`,
nothing fetched from anywhere else) and the JSON admin API it polls, /admin/*.

- `session.py`: the signed session cookie a master-key sign-in sets, and its CSRF token.
- `gather.py`: what `GET /admin/state` answers, read from Redis in one round trip.
- `actions.py`: breaker reset / force open, job cancel, and the shared log of those actions.
- `routes.py`: the Starlette app for /dashboard and /admin/*, and who may call them.
"""
