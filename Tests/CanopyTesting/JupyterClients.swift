import Foundation
import Testing

/// The JupyterLab `scripts/test.sh` installs for the live tests.
public enum LiveJupyter {
    public static let venv = "/opt/canopy-test/jupyter"
    /// Installed, or required (then a missing one fails the suite rather than skipping it).
    public static var enabled: Bool {
        FileManager.default.isExecutableFile(atPath: venv + "/bin/jupyter") || ProcessInfo.processInfo.environment["CANOPY_REQUIRE_JUPYTER"] == "1"
    }
}

/// Python clients of a JupyterLab's kernel and terminal WebSockets, and of its REST API, for the live tests.
public enum JupyterClients {
    static let webSocketHandshake = """
        key = base64.b64encode(os.urandom(16)).decode()
        s.sendall(("GET %s HTTP/1.1\\r\\nHost: %s:%d\\r\\nUpgrade: websocket\\r\\nConnection: Upgrade\\r\\nSec-WebSocket-Key: %s\\r\\n"
                   "Sec-WebSocket-Version: 13\\r\\n%s\\r\\n\\r\\n" % (url.path, url.hostname, url.port, key, auth)).encode())
        buf = b""
        while b"\\r\\n\\r\\n" not in buf: buf += s.recv(4096)
        head, buf = buf.split(b"\\r\\n\\r\\n", 1)
        if b" 101 " not in head.split(b"\\r\\n")[0]: print("HANDSHAKE", head.decode()); sys.exit(1)
        """

    /// Runs code in a kernel over the kernel's WebSocket (Python's standard library only: the RFC 6455 handshake and
    /// framing by hand), authenticated as the caller: a bearer token or a cookie. Prints what the kernel printed.
    public static let kernel = """
        import base64, json, os, socket, struct, sys, urllib.parse, uuid
        url, auth, code = urllib.parse.urlsplit(sys.argv[1]), sys.argv[2], sys.argv[3]
        s = socket.create_connection((url.hostname, url.port), timeout=60)
        \(JupyterClients.webSocketHandshake)
        def send(obj):
            data = json.dumps(obj).encode(); mask = os.urandom(4)
            n = len(data)
            header = bytes([0x81]) + (bytes([0x80 | n]) if n < 126 else bytes([0x80 | 126]) + struct.pack(">H", n) if n < 65536 else bytes([0x80 | 127]) + struct.pack(">Q", n))
            s.sendall(header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(data)))
        def recv():
            global buf
            def need(k):
                global buf
                while len(buf) < k:
                    d = s.recv(65536)
                    if not d: raise EOFError
                    buf += d
            need(2); op, n = buf[0] & 0x0f, buf[1] & 0x7f; off = 2
            if n == 126: need(4); n = struct.unpack(">H", buf[2:4])[0]; off = 4
            elif n == 127: need(10); n = struct.unpack(">Q", buf[2:10])[0]; off = 10
            need(off + n); data = buf[off:off + n]; buf = buf[off + n:]
            return op, data
        msg_id = uuid.uuid4().hex
        send({"header": {"msg_id": msg_id, "username": "test", "session": uuid.uuid4().hex, "msg_type": "execute_request", "version": "5.3", "date": ""},
              "parent_header": {}, "metadata": {}, "channel": "shell", "buffers": [],
              "content": {"code": code, "silent": False, "store_history": False, "user_expressions": {}, "allow_stdin": False, "stop_on_error": True}})
        out = ""
        while True:
            op, data = recv()
            if op == 8: break
            if op != 1: continue
            m = json.loads(data)
            if m.get("parent_header", {}).get("msg_id") != msg_id: continue
            if m["msg_type"] == "stream": out += m["content"]["text"]
            if m["msg_type"] == "status" and m["content"]["execution_state"] == "idle": break
        print(out, end="")
        """

    /// POSTs `{}` to a JupyterLab collection (`api/kernels`, `api/terminals`) with a bearer token; the new
    /// object's `field`.
    public static func create(_ url: String, field: String, token: String) async throws -> String {
        let made = try await runProcess(
            "/usr/bin/python3",
            [
                "-c",
                "import sys, json, urllib.request; r = urllib.request.urlopen(urllib.request.Request(sys.argv[1], data=b'{}', method='POST', headers={'Authorization': 'Bearer ' + sys.argv[2], 'Content-Type': 'application/json'})); print(json.load(r)[sys.argv[3]])",
                url, token, field,
            ])
        let value = made.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        #expect(made.status == 0 && !value.isEmpty, "\(made)")
        return value
    }

    /// Types a line into a JupyterLab terminal over its WebSocket (`["stdin", ...]` messages) and waits until the
    /// terminal echoes `marker` back, or 20 seconds pass; prints what it saw.
    public static let terminal = """
        import base64, json, os, socket, struct, sys, time, urllib.parse
        url, auth, line, marker = urllib.parse.urlsplit(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
        s = socket.create_connection((url.hostname, url.port), timeout=20)
        \(JupyterClients.webSocketHandshake)
        data = json.dumps(["stdin", line + "\\r"]).encode(); mask = os.urandom(4)
        s.sendall(bytes([0x81, 0x80 | len(data)]) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(data)))
        seen, end = "", time.time() + 20
        while time.time() < end and marker not in seen:
            d = s.recv(65536)
            if not d: break
            buf += d
            while len(buf) >= 2:
                n, off = buf[1] & 0x7f, 2
                if n == 126: n, off = struct.unpack(">H", buf[2:4])[0], 4
                elif n == 127: n, off = struct.unpack(">Q", buf[2:10])[0], 10
                if len(buf) < off + n: break
                payload, buf = buf[off:off + n], buf[off + n:]
                try: seen += "".join(str(x) for x in json.loads(payload)[1:])
                except Exception: pass
        print(seen)
        """

}
