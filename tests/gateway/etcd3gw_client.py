"""OpenStack's etcd3gw (Debian python3-etcd3gw) against a member's JSON
gateway: every call etcd3gw makes, with its results checked. Run by
tests/gateway.rs as `/usr/bin/python3 etcd3gw_client.py PORT`; prints
"ok" at the end, or fails with an assertion."""

import sys
import threading

from etcd3gw.client import Etcd3Client

port = int(sys.argv[1])
c = Etcd3Client(host="127.0.0.1", port=port, api_path="/v3/")

# status and members
assert c.status()["version"].count(".") == 2
members = c.members()
assert len(members) == 1 and members[0]["clientURLs"], members

# put, get, prefix get, delete
assert c.put("/app/a", "1") is True
assert c.put("/app/b", "2") is True
assert c.put("/other", "x") is True
assert c.get("/app/a") == [b"1"], c.get("/app/a")
value, meta = c.get("/app/b", metadata=True)[0]
assert value == b"2" and meta["key"] == b"/app/b" and int(meta["version"]) == 1, meta
prefix = sorted(v for v, _ in c.get_prefix("/app/"))
assert prefix == [b"1", b"2"], prefix
assert c.get("/missing") == []
assert c.delete("/app/a") is True
assert c.delete("/app/a") is False
assert c.get("/app/a") == []

# transactions: create only if absent, replace only if equal
assert c.create("/app/c", "3") is True
assert c.create("/app/c", "4") is False
assert c.replace("/app/c", "3", "5") is True
assert c.replace("/app/c", "3", "6") is False
assert c.get("/app/c") == [b"5"]
txn = {
    "compare": [{"key": "L2FwcC9j", "result": "EQUAL", "target": "VALUE", "value": "NQ=="}],
    "success": [{"request_put": {"key": "L2FwcC9k", "value": "Nw=="}}],
    "failure": [],
}
assert c.transaction(txn)["succeeded"] is True
assert c.get("/app/d") == [b"7"]

# a lease with keys: grant, attach, time to live, keys, refresh, revoke
lease = c.lease(ttl=60)
assert lease.id > 0
assert c.put("/leased/1", "a", lease=lease) is True
assert c.put("/leased/2", "b", lease=lease) is True
assert 0 < lease.ttl() <= 60, lease.ttl()
assert sorted(lease.keys()) == [b"/leased/1", b"/leased/2"], lease.keys()
assert 0 < lease.refresh() <= 60
assert lease.revoke() is True
assert c.get_prefix("/leased/") == []

# watch: an event for a put made after the watch starts
events, cancel = c.watch("/watched")
got = []


def read():
    for event in events:
        got.append(event)
        break


reader = threading.Thread(target=read)
reader.start()
# The watch is created asynchronously: put until the event arrives.
for i in range(100):
    c.put("/watched", "v%d" % i)
    reader.join(timeout=0.2)
    if got:
        break
cancel()
assert got and got[0]["kv"]["key"] == b"/watched", got
assert got[0]["kv"]["value"].startswith(b"v"), got

# watch_prefix_once: a delete event
def delete_later():
    for _ in range(100):
        c.put("/wp/x", "1")
        c.delete("/wp/x")
        if done.wait(0.1):
            return


done = threading.Event()
t = threading.Thread(target=delete_later)
t.start()
event = c.watch_prefix_once("/wp/", timeout=20)
done.set()
t.join()
assert event["kv"]["key"] == b"/wp/x", event

# a lock (txn on /locks/ with a lease)
lock = c.lock("job", ttl=30)
assert lock.acquire() is True
assert lock.is_acquired() is True
assert lock.release() is True

print("ok")
