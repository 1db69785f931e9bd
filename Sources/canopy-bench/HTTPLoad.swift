import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// A deliberately small blocking HTTP/1.1 client over one keep-alive socket, so that the load generator costs
/// as little CPU as possible on the machine it shares with the server (one thread per client, no event loop).
final class BlockingHTTPClient {
    private let fd: Int32
    private var buffer: [UInt8] = []
    private let host: String
    private let token: String

    struct Response {
        var status: Int
        var body: [UInt8]
        var text: String { String(decoding: body, as: UTF8.self) }
    }

    init(port: Int, token: String) throws {
        self.host = "127.0.0.1:\(port)"
        self.token = token
        fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw BenchError("socket: \(String(cString: strerror(errno)))") }
        var one: Int32 = 1
        setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = in_port_t(UInt16(port).bigEndian)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        let rc = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard rc == 0 else {
            close(fd)
            throw BenchError("connect to \(host): \(String(cString: strerror(errno)))")
        }
    }

    /// A client of a server on a unix socket (the container engine's), sending no credentials.
    init(unixSocket path: String) throws {
        self.host = "docker"
        self.token = ""
        fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw BenchError("socket: \(String(cString: strerror(errno)))") }
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        guard bytes.count < MemoryLayout.size(ofValue: addr.sun_path) else { throw BenchError("socket path too long: \(path)") }
        withUnsafeMutableBytes(of: &addr.sun_path) { raw in
            for (i, b) in bytes.enumerated() { raw[i] = b }
        }
        let rc = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard rc == 0 else {
            close(fd)
            throw BenchError("connect to \(path): \(String(cString: strerror(errno)))")
        }
    }

    deinit { close(fd) }

    /// `headers` replace the bearer token (a dialect's credentials).
    func request(_ method: String, _ path: String, body: String? = nil, headers: [(String, String)]? = nil) throws -> Response {
        var head = "\(method) \(path) HTTP/1.1\r\nHost: \(host)\r\n"
        if let headers {
            for (name, value) in headers { head += "\(name): \(value)\r\n" }
        } else if !token.isEmpty {
            head += "Authorization: Bearer \(token)\r\n"
        }
        if let body {
            head += "Content-Type: application/json\r\nContent-Length: \(body.utf8.count)\r\n"
        }
        head += "\r\n"
        try sendAll(Array(head.utf8) + Array((body ?? "").utf8))
        return try readResponse()
    }

    /// Asks for a WebSocket upgrade of `path`; the status of the answer (101 when upgraded). Its bytes after the
    /// answer's head stay in the buffer.
    func upgrade(_ path: String) throws -> Int {
        let head =
            "GET \(path) HTTP/1.1\r\nHost: \(host)\r\n" + (token.isEmpty ? "" : "Authorization: Bearer \(token)\r\n")
            + "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        try sendAll(Array(head.utf8))
        let separator: [UInt8] = [13, 10, 13, 10]
        while true {
            if buffer.count >= 4, let end = (0...(buffer.count - 4)).first(where: { Array(buffer[$0..<($0 + 4)]) == separator }) {
                let status = String(decoding: buffer[0..<end], as: UTF8.self).split(separator: " ").dropFirst().first.flatMap { Int($0) } ?? 0
                buffer.removeFirst(end + 4)
                return status
            }
            try fill()
        }
    }

    /// Sends `bytes` and reads exactly `count` bytes back (a WebSocket frame and its echo).
    func roundTrip(_ bytes: [UInt8], expect count: Int) throws -> [UInt8] {
        try sendAll(bytes)
        while buffer.count < count { try fill() }
        let out = Array(buffer[0..<count])
        buffer.removeFirst(count)
        return out
    }

    private func sendAll(_ bytes: [UInt8]) throws {
        try bytes.withUnsafeBytes { raw in
            var sent = 0
            while sent < raw.count {
                let n = send(fd, raw.baseAddress! + sent, raw.count - sent, Int32(MSG_NOSIGNAL))
                guard n > 0 else { throw BenchError("send: \(String(cString: strerror(errno)))") }
                sent += n
            }
        }
    }

    private func fill() throws {
        var chunk = [UInt8](repeating: 0, count: 65536)
        let n = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
        guard n > 0 else { throw BenchError(n == 0 ? "connection closed" : "recv: \(String(cString: strerror(errno)))") }
        buffer.append(contentsOf: chunk[0..<n])
    }

    private func readResponse() throws -> Response {
        let separator: [UInt8] = [13, 10, 13, 10]
        var headerEnd: Int?
        while headerEnd == nil {
            if buffer.count >= 4 {
                for i in 0...(buffer.count - 4) where buffer[i] == 13 && Array(buffer[i..<(i + 4)]) == separator {
                    headerEnd = i
                    break
                }
            }
            if headerEnd == nil { try fill() }
        }
        let head = String(decoding: buffer[0..<headerEnd!], as: UTF8.self)
        let lines = head.split(separator: "\r\n")
        let status = lines.first.flatMap { Int($0.split(separator: " ").dropFirst().first ?? "") } ?? 0
        var length: Int?
        var chunked = false
        for line in lines.dropFirst() {
            let parts = line.split(separator: ":", maxSplits: 1)
            guard parts.count == 2 else { continue }
            let name = parts[0].lowercased()
            let value = parts[1].trimmingCharacters(in: .whitespaces)
            if name == "content-length" { length = Int(value) }
            if name == "transfer-encoding", value.lowercased().contains("chunked") { chunked = true }
        }
        buffer.removeFirst(headerEnd! + 4)
        if chunked { return Response(status: status, body: try readChunked()) }
        let count = length ?? 0
        while buffer.count < count { try fill() }
        let body = Array(buffer[0..<count])
        buffer.removeFirst(count)
        return Response(status: status, body: body)
    }

    private func readChunked() throws -> [UInt8] {
        var body: [UInt8] = []
        while true {
            var lineEnd: Int?
            while lineEnd == nil {
                if buffer.count >= 2 {
                    for i in 0...(buffer.count - 2) where buffer[i] == 13 && buffer[i + 1] == 10 {
                        lineEnd = i
                        break
                    }
                }
                if lineEnd == nil { try fill() }
            }
            let size = Int(String(decoding: buffer[0..<lineEnd!], as: UTF8.self).split(separator: ";").first ?? "", radix: 16) ?? 0
            buffer.removeFirst(lineEnd! + 2)
            while buffer.count < size + 2 { try fill() }
            body += buffer[0..<size]
            buffer.removeFirst(size + 2)
            if size == 0 { return body }
        }
    }
}

struct BenchError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

/// Runs `body` on `count` threads at once and waits for all of them.
func onThreads(_ count: Int, _ body: @escaping @Sendable (Int) -> Void) {
    let group = DispatchGroup()
    for i in 0..<count {
        group.enter()
        let thread = Thread {
            body(i)
            group.leave()
        }
        thread.stackSize = 256 * 1024
        thread.start()
    }
    group.wait()
}

/// Monotonic seconds.
func monotonicNow() -> Double {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
}

/// Wall-clock seconds since the epoch (what `date +%s.%N` prints in a task).
func realtimeNow() -> Double {
    var ts = timespec()
    clock_gettime(CLOCK_REALTIME, &ts)
    return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
}

/// The q-quantile of some samples.
func quantile(_ samples: [Double], _ q: Double) -> Double {
    guard !samples.isEmpty else { return .nan }
    let sorted = samples.sorted()
    return sorted[min(sorted.count - 1, Int((Double(sorted.count - 1) * q).rounded()))]
}
