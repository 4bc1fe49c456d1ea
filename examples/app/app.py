"""A small web app under `greenloop dev`: edit it while it runs and the browser follows."""

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

TITLE: str = "Hello from the app"
VISITS: int = 3


def items() -> list[str]:
    """The list shown on the page."""
    return [f"item {n}" for n in range(1, VISITS + 1)]


async def home(request: Request) -> Response:
    """The page: a title and a list."""
    listed = "".join(f"<li>{item}</li>" for item in items())
    return HTMLResponse(
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>{TITLE}</title></head><body><h1 id='title'>{TITLE}</h1>"
        f"<ul>{listed}</ul></body></html>"
    )


async def title(request: Request) -> Response:
    """The title as JSON, for scripts (and tests) that poll the app."""
    return JSONResponse({"title": TITLE})


async def healthz(request: Request) -> Response:
    """What `ready = "/healthz"` waits for before the app takes over."""
    return PlainTextResponse("ok")


async def echo(websocket: WebSocket) -> None:
    """A WebSocket that answers each message with itself, through greenloop's proxy."""
    await websocket.accept()
    async for message in websocket.iter_text():
        await websocket.send_text(f"{TITLE}: {message}")


app = Starlette(
    routes=[
        Route("/", home),
        Route("/api/title", title),
        Route("/healthz", healthz),
        WebSocketRoute("/ws", echo),
    ]
)
