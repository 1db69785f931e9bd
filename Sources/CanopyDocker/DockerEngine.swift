import AsyncHTTPClient
import CanopyCore
import Foundation
import NIOCore
import NIOHTTP1
import NIOFoundationCompat

/// A client of the Docker Engine API (version 1.41, which Debian's dockerd 20.10 speaks and podman's compatible API
/// serves) on a unix socket. It never shells out to the `docker` command.
///
/// Two HTTP clients share the socket: one for short calls, and one for long-lived streams (each running
/// container's log stream, the engine's event stream), so that streams never hold up calls queued behind them.
public final class DockerEngine: Sendable {
    /// The socket path.
    public let socketPath: String
    private let calls: HTTPClient
    private let streams: HTTPClient
    static let apiVersion = "v1.41"

    /// An answer the engine gave with an error status.
    public struct EngineError: Error, Sendable, CustomStringConvertible {
        /// The HTTP status.
        public var status: Int
        /// The engine's message.
        public var message: String
        public var description: String { "the container engine answered \(status): \(message)" }
    }

    /// Parses `unix:///path/docker.sock` (or a bare absolute path) into a socket path.
    public static func socketPath(fromURL text: String) throws -> String {
        let path = text.hasPrefix("unix://") ? String(text.dropFirst("unix://".count)) : text
        guard path.hasPrefix("/"), !path.contains("\0") else {
            throw CanopyError.invalid("container-engine", "expected unix:///path/to/docker.sock, got \"\(text)\"")
        }
        return path
    }

    /// The engine sockets looked for when none is configured: Docker's, then podman's (root, then the user's).
    public static var defaultSockets: [String] {
        var list = ["/var/run/docker.sock", "/run/podman/podman.sock"]
        if let dir = ProcessInfo.processInfo.environment["XDG_RUNTIME_DIR"] { list.append(dir + "/podman/podman.sock") }
        return list
    }

    /// Creates a client of the engine at `socketPath` (nothing is contacted yet).
    public init(socketPath: String) {
        self.socketPath = socketPath
        var short = HTTPClient.Configuration()
        short.timeout = .init(connect: .seconds(5), read: .seconds(120))
        short.connectionPool = .init(idleTimeout: .seconds(30), concurrentHTTP1ConnectionsPerHostSoftLimit: 32)
        calls = HTTPClient(eventLoopGroupProvider: .singleton, configuration: short)
        var long = HTTPClient.Configuration()
        long.timeout = .init(connect: .seconds(5), read: nil)
        long.connectionPool = .init(idleTimeout: .seconds(10), concurrentHTTP1ConnectionsPerHostSoftLimit: 4096)
        streams = HTTPClient(eventLoopGroupProvider: .singleton, configuration: long)
    }

    deinit {
        try? calls.syncShutdown()
        try? streams.syncShutdown()
    }

    private func url(_ path: String, _ query: [(String, String)] = []) -> String {
        var uri = "/\(Self.apiVersion)\(path)"
        if !query.isEmpty {
            var c = URLComponents()
            c.queryItems = query.map { URLQueryItem(name: $0.0, value: $0.1) }
            uri += "?" + (c.percentEncodedQuery ?? "").replacingOccurrences(of: "+", with: "%2B")
        }
        return URL(httpURLWithSocketPath: socketPath, uri: uri)!.absoluteString
    }

    /// Sends a call; the engine's whole answer (bounded) with its status. Throws `BackendUnavailable` when the
    /// engine cannot be reached.
    func call(
        _ method: HTTPMethod, _ path: String, query: [(String, String)] = [], json: (any Encodable)? = nil, body: HTTPClientRequest.Body? = nil,
        contentType: String? = nil, timeout: TimeAmount = .seconds(120), limit: Int = 64 << 20
    ) async throws -> (status: Int, body: ByteBuffer) {
        var request = HTTPClientRequest(url: url(path, query))
        request.method = method
        // The client sends no Host for a unix socket, and the engine requires one (any name does).
        request.headers.add(name: "Host", value: "docker")
        if let json {
            request.headers.add(name: "Content-Type", value: "application/json")
            request.body = .bytes(ByteBuffer(data: try JSONEncoder().encode(json)))
        } else if let body {
            request.body = body
            if let contentType { request.headers.add(name: "Content-Type", value: contentType) }
        }
        let response: HTTPClientResponse
        do {
            response = try await calls.execute(request, timeout: timeout)
        } catch {
            throw BackendUnavailable("the container engine at \(socketPath) cannot be reached (\(error))")
        }
        let bytes: ByteBuffer
        do {
            bytes = try await response.body.collect(upTo: limit)
        } catch {
            throw BackendUnavailable("the container engine at \(socketPath) broke off its answer (\(error))")
        }
        return (Int(response.status.code), bytes)
    }

    /// Sends a call and decodes a successful answer; an error status throws `EngineError` with the engine's message.
    func call<T: Decodable>(
        _ type: T.Type, _ method: HTTPMethod, _ path: String, query: [(String, String)] = [], json: (any Encodable)? = nil,
        timeout: TimeAmount = .seconds(120)
    ) async throws -> T {
        let (status, body) = try await call(method, path, query: query, json: json, timeout: timeout)
        try Self.check(status, body)
        return try JSONDecoder().decode(T.self, from: body)
    }

    /// Throws `EngineError` for an error status.
    static func check(_ status: Int, _ body: ByteBuffer) throws {
        guard status >= 300 else { return }
        struct Message: Decodable { var message: String }
        let message = (try? JSONDecoder().decode(Message.self, from: body))?.message ?? String(buffer: body)
        throw EngineError(status: status, message: message.trimmingCharacters(in: .whitespacesAndNewlines))
    }

    /// Opens a long-lived stream (logs, events); the response body is read by the caller.
    func stream(
        _ path: String, query: [(String, String)] = [], method: HTTPMethod = .GET, body: HTTPClientRequest.Body? = nil, contentType: String? = nil,
        deadline: NIODeadline = .distantFuture
    ) async throws -> HTTPClientResponse {
        var request = HTTPClientRequest(url: url(path, query))
        request.method = method
        request.headers.add(name: "Host", value: "docker")
        if let body {
            request.body = body
            if let contentType { request.headers.add(name: "Content-Type", value: contentType) }
        }
        do {
            return try await streams.execute(request, deadline: deadline)
        } catch {
            throw BackendUnavailable("the container engine at \(socketPath) cannot be reached (\(error))")
        }
    }

    // MARK: calls

    /// Whether the engine answers.
    public func ping() async -> Bool {
        guard let (status, _) = try? await call(.GET, "/_ping", timeout: .seconds(5)) else { return false }
        return status == 200
    }

    /// The engine's version and whether the NVIDIA runtime is registered.
    public func info() async throws -> EngineInfo {
        try await call(EngineInfo.self, .GET, "/info")
    }
}

/// What the engine says about itself.
public struct EngineInfo: Decodable, Sendable {
    /// The engine's version.
    public var serverVersion: String?
    /// The OCI runtimes it has (`nvidia` where the NVIDIA container toolkit is installed).
    public var runtimes: [String: JSONAny]?
    /// The cgroup driver.
    public var cgroupDriver: String?

    enum CodingKeys: String, CodingKey {
        case serverVersion = "ServerVersion", runtimes = "Runtimes", cgroupDriver = "CgroupDriver"
    }
}

/// Any JSON value, decoded and ignored.
public struct JSONAny: Decodable, Sendable {
    public init(from decoder: any Decoder) throws {}
}

extension DockerEngine {
    /// Sends `POST path` with a JSON body asking for the connection to be handed over (`Upgrade: tcp`), as the
    /// engine's exec start and attach need: returns the socket, now a raw two-way stream, and what followed the
    /// response head. Blocking; runs on a thread of its own. Throws `EngineError` for an error answer.
    func hijack(_ path: String, json: Data) async throws -> (fd: Int32, leftover: [UInt8]) {
        let socketPath = socketPath
        let uri = "/\(Self.apiVersion)\(path)"
        return try await withCheckedThrowingContinuation { continuation in
            Thread {
                continuation.resume(with: Result { try Self.hijackNow(socketPath: socketPath, uri: uri, json: json) })
            }.start()
        }
    }

    private static func hijackNow(socketPath: String, uri: String, json: Data) throws -> (fd: Int32, leftover: [UInt8]) {
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw BackendUnavailable("no socket for the container engine: \(String(cString: strerror(errno)))") }
        var ok = false
        defer { if !ok { close(fd) } }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(socketPath.utf8)
        guard bytes.count < MemoryLayout.size(ofValue: address.sun_path) else { throw BackendUnavailable("the engine's socket path is too long") }
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            for (i, b) in bytes.enumerated() { raw[i] = b }
        }
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard connected == 0 else { throw BackendUnavailable("the container engine at \(socketPath) cannot be reached (\(String(cString: strerror(errno))))") }
        // Bounded waits while the head is exchanged; none once the stream is running.
        var timeout = timeval(tv_sec: 30, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        let head =
            "POST \(uri) HTTP/1.1\r\nHost: docker\r\nContent-Type: application/json\r\nConnection: Upgrade\r\nUpgrade: tcp\r\n"
            + "Content-Length: \(json.count)\r\n\r\n"
        let request = Array(head.utf8) + Array(json)
        var sent = 0
        while sent < request.count {
            let n = request[sent...].withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { throw BackendUnavailable("the container engine closed the connection") }
            sent += n
        }
        var received: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 16384)
        let separator: [UInt8] = [13, 10, 13, 10]
        var end: Int?
        while end == nil {
            let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { throw BackendUnavailable("the container engine closed the connection before answering") }
            received += buffer[0..<n]
            if received.count > 65536 { throw BackendUnavailable("the container engine's answer has no end of head") }
            if let r = received.firstRange(of: separator) { end = r.upperBound }
        }
        let headText = String(decoding: received[..<end!], as: UTF8.self)
        let status = headText.split(separator: " ", maxSplits: 2).dropFirst().first.flatMap { Int($0) } ?? 0
        guard status == 101 || status == 200 else {
            let body = String(decoding: received[end!...], as: UTF8.self)
            struct Message: Decodable { var message: String }
            let message = (try? JSONDecoder().decode(Message.self, from: Data(body.utf8)))?.message ?? body
            throw EngineError(status: status, message: message.trimmingCharacters(in: .whitespacesAndNewlines))
        }
        timeout = timeval(tv_sec: 0, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        ok = true
        return (fd, Array(received[end!...]))
    }
}
