# A keep-alive HTTP/1.1 client for instruction counts of a loadbench server under callgrind:
# sends N requests for `/` over C connections (each sends its next request when the previous
# answer is read) and prints how many answers it read.
#
#     python3 drive.py PORT N [C]
import select
import socket
import sys

port = int(sys.argv[1])
n = int(sys.argv[2])
c = int(sys.argv[3]) if len(sys.argv) > 3 else 8
req = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
socks = []
for _ in range(c):
    s = socket.create_connection(("127.0.0.1", port))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    socks.append(s)
sent = 0
done = 0
bufs = {s: b"" for s in socks}
for s in socks:
    if sent < n:
        s.sendall(req)
        sent += 1
while done < n:
    ready, _, _ = select.select(socks, [], [])
    for s in ready:
        bufs[s] += s.recv(65536)
        while True:
            b = bufs[s]
            i = b.find(b"\r\n\r\n")
            if i < 0:
                break
            length = 0
            for line in b[:i].decode().split("\r\n"):
                if line.lower().startswith("content-length:"):
                    length = int(line.split(":")[1])
            if len(b) < i + 4 + length:
                break
            bufs[s] = b[i + 4 + length :]
            done += 1
            if sent < n:
                s.sendall(req)
                sent += 1
print(done)
