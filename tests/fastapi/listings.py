"""A small FastAPI app shaped like Deal Brain's listings API (seed 000):
list, create, update and delete listings, plus a single-listing GET and a
health check. tests/init.rs reads its generated /openapi.json with
`pollcast init`, runs pollcast with the written config, and changes the data
through pollcast.

Binds 127.0.0.1 on an ephemeral port and prints `port=<n>` on stdout once
the socket listens, so the test never guesses a port.
"""

import socket
import sys
from datetime import datetime, timezone
from typing import Optional

import uvicorn
from fastapi import FastAPI, HTTPException, Query, Response
from pydantic import BaseModel

app = FastAPI(title="Deal Brain API", version="0.1.0")


class ListingCreate(BaseModel):
    title: str
    price_usd: float
    form_factor: Optional[str] = None


class ListingUpdate(BaseModel):
    title: Optional[str] = None
    price_usd: Optional[float] = None


class ListingRead(ListingCreate):
    id: int
    updated_at: datetime


LISTINGS: dict[int, ListingRead] = {}
NEXT_ID = 1


def now() -> datetime:
    return datetime.now(timezone.utc)


def add(data: ListingCreate) -> ListingRead:
    global NEXT_ID
    listing = ListingRead(id=NEXT_ID, updated_at=now(), **data.model_dump())
    LISTINGS[listing.id] = listing
    NEXT_ID += 1
    return listing


add(ListingCreate(title="Mini PC N100", price_usd=149.0, form_factor="mini"))
add(ListingCreate(title="Tower i5-12400", price_usd=499.0, form_factor="tower"))


@app.get("/health")
def health() -> dict[str, str]:
    return {"status": "ok"}


@app.get("/api/v1/listings", response_model=list[ListingRead])
def list_listings(
    limit: int = Query(50, ge=1, le=500),
    offset: int = Query(0, ge=0),
    form_factor: Optional[str] = None,
):
    items = [l for l in LISTINGS.values() if form_factor in (None, l.form_factor)]
    return items[offset : offset + limit]


@app.post("/api/v1/listings", response_model=ListingRead, status_code=201)
def create_listing(data: ListingCreate):
    return add(data)


@app.get("/api/v1/listings/{listing_id}", response_model=ListingRead)
def get_listing(listing_id: int):
    if listing_id not in LISTINGS:
        raise HTTPException(404, "no such listing")
    return LISTINGS[listing_id]


@app.patch("/api/v1/listings/{listing_id}", response_model=ListingRead)
def update_listing(listing_id: int, data: ListingUpdate):
    if listing_id not in LISTINGS:
        raise HTTPException(404, "no such listing")
    changed = LISTINGS[listing_id].model_copy(update=data.model_dump(exclude_unset=True))
    changed.updated_at = now()
    LISTINGS[listing_id] = changed
    return changed


@app.delete("/api/v1/listings/{listing_id}", status_code=204)
def delete_listing(listing_id: int):
    LISTINGS.pop(listing_id, None)
    return Response(status_code=204)


if __name__ == "__main__":
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    # Listening before the port is printed: a connection made from then on
    # waits in the backlog until uvicorn accepts it, instead of being refused.
    sock.listen(128)
    print(f"port={sock.getsockname()[1]}", flush=True)
    config = uvicorn.Config(app, log_level="warning")
    uvicorn.Server(config).run(sockets=[sock])
    sys.exit(0)
