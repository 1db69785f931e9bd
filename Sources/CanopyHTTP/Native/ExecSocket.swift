import CanopyCore
import CanopyServices
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdWebSocket
import Logging
import NIOCore
import Synchronization

/// `GET /api/v1/workloads/{id}/exec` upgraded to a WebSocket: a command run inside a running task, with a
/// pseudo-terminal if asked, its standard input, window resizes and its exit code.
///
/// The protocol is Kubernetes' `v5.channel.k8s.io` (what `kubectl exec` speaks), so existing clients need little
/// to talk to it. Every message is binary and starts with its channel: 0 standard input (client to server), 1
/// standard output, 2 standard error, 3 the status once the command has ended (JSON, below), 4 a resize
/// (`{"Width": 120, "Height": 40}`, client to server), 255 a close of a stream (`[255, 0]`: end of standard input).
/// The status is Kubernetes' `Status` with the exit code added: `{"status": "Success", "exitCode": 0}`, or
/// `{"status": "Failure", "reason": "NonZeroExitCode", "message": ..., "exitCode": 3, "details": {"causes":
/// [{"reason": "ExitCode", "message": "3"}]}}`, or, when the command could not start, `{"status": "Failure",
/// "reason": "...", "message": ...}`. The server then closes the socket; a client that closes it first ends the
/// command.
///
/// Query: `command` (repeated, one per argument, required), `task` (default 0), `stdin` (true: the client sends
/// standard input; otherwise it is closed at once), `tty` (true/false), `rows` and `cols` (the terminal's size at
/// start). Without an upgrade, or when the caller may not exec, the same path
/// answers in the API's error shape (`NativeAPI.exec`).
public struct ExecSocket: Sendable {
    /// The subprotocol spoken.
    public static let subprotocol = "v5.channel.k8s.io"
    /// The largest message a client may send.
    static let maxMessage = 1 << 20
    /// The most input that may wait for a command that reads slower than the client sends: beyond it, the socket
    /// is not read until the command has taken half of it (backpressure to the client, through TCP).
    static let maxPendingInput = 16 << 20

    /// What the client sends the command.
    enum Input: Sendable {
        case bytes([UInt8])
        case resize(Int, Int)
        case end
    }

    /// Bytes received and not yet written to the command.
    final class PendingBytes: Sendable {
        private let count = Mutex(0)
        func add(_ n: Int) -> Int { count.withLock { $0 += n; return $0 } }
        func remove(_ n: Int) { count.withLock { $0 -= n } }
        var current: Int { count.withLock { $0 } }
    }

    /// Set once the command's output (and so the command) has ended.
    final class Flag: Sendable {
        private let value = Mutex(false)
        func set() { value.withLock { $0 = true } }
        var isSet: Bool { value.withLock { $0 } }
    }

    let auth: AuthService
    let exec: ExecService

    /// Creates the endpoint.
    public init(auth: AuthService, exec: ExecService) {
        self.auth = auth
        self.exec = exec
    }

    /// What a request asks for.
    struct Query {
        var workloadID: String
        var task: Int
        var request: ExecRequest
        /// Whether the client sends standard input (`stdin=true`); without it the command's input is closed at
        /// once, as with Kubernetes.
        var stdin: Bool
    }

    /// Parses the path's workload id and the query; throws naming the offending parameter.
    static func parse(workloadID: String, query: [(String, String)]) throws -> Query {
        func one(_ name: String) -> String? { query.last(where: { $0.0 == name })?.1 }
        func bool(_ name: String) throws -> Bool {
            switch one(name)?.lowercased() {
            case nil, "", "false", "0": return false
            case "true", "1": return true
            default: throw CanopyError.invalid(name, "\(name) must be true or false")
            }
        }
        func int(_ name: String, _ range: ClosedRange<Int>) throws -> Int? {
            guard let text = one(name) else { return nil }
            guard let n = Int(text), range.contains(n) else { throw CanopyError.invalid(name, "\(name) must be an integer from \(range.lowerBound) to \(range.upperBound)") }
            return n
        }
        let command = query.filter { $0.0 == "command" }.map(\.1)
        try ExecService.validate(command)
        let tty = try bool("tty")
        let stdin = try bool("stdin")
        return Query(
            workloadID: workloadID, task: try int("task", 0...1023) ?? 0,
            request: ExecRequest(command: command, tty: tty, rows: try int("rows", 1...10_000), columns: try int("cols", 1...10_000)), stdin: stdin)
    }

    /// The query of a request target, decoded (`+` is a space, as forms send it).
    static func queryItems(_ target: String) -> [(String, String)] {
        guard let q = target.firstIndex(of: "?") else { return [] }
        return target[target.index(after: q)...].split(separator: "&").map { pair in
            let parts = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            func decode(_ s: Substring) -> String { String(s).replacingOccurrences(of: "+", with: " ").removingPercentEncoding ?? String(s) }
            return (decode(parts[0]), parts.count > 1 ? decode(parts[1]) : "")
        }
    }

    /// The workload id in `/api/v1/workloads/ID/exec`, or nil for any other path.
    static func workloadID(inPath target: String) -> String? {
        let path = target.split(separator: "?", maxSplits: 1).first.map(String.init) ?? ""
        let parts = path.split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count == 6, parts[0].isEmpty, parts[1] == "api", parts[2] == "v1", parts[3] == "workloads", parts[5] == "exec", !parts[4].isEmpty else {
            return nil
        }
        return String(parts[4]).removingPercentEncoding
    }

    /// Decides on an upgrade: only for this path, a valid bearer token and a command the caller may run there.
    /// Anything else is not upgraded, and the router answers it (with the error, in the API's shape).
    public func shouldUpgrade(_ head: HTTPRequest, logger: Logger) async -> ShouldUpgradeResult<WebSocketDataHandler<HTTP1WebSocketUpgradeChannel.Context>> {
        guard let target = head.path, let id = Self.workloadID(inPath: target),
            let header = head.headerFields[.authorization], case let parts = header.split(separator: " ", maxSplits: 1), parts.count == 2,
            parts[0].lowercased() == "bearer", let principal = auth.authenticate(String(parts[1])),
            let query = try? Self.parse(workloadID: id, query: Self.queryItems(target)),
            (try? await exec.authorize(principal, workloadID: query.workloadID, task: query.task, command: query.request.command)) != nil
        else { return .dontUpgrade }
        var headers = HTTPFields()
        let offered = (head.headerFields[values: .secWebSocketProtocol]).flatMap { $0.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) } }
        if offered.contains(Self.subprotocol) { headers[.secWebSocketProtocol] = Self.subprotocol }
        let exec = exec
        return .upgrade(headers) { inbound, outbound, _ in
            await Self.run(query, principal: principal, exec: exec, inbound: inbound, outbound: outbound, logger: logger)
        }
    }

    static func status(exitCode: Int?) -> [String: Any] {
        guard let code = exitCode else {
            return ["metadata": [:] as [String: Any], "status": "Failure", "reason": "Unknown", "message": "how the command ended is not known"]
        }
        if code == 0 { return ["metadata": [:] as [String: Any], "status": "Success", "exitCode": 0] }
        return [
            "metadata": [:] as [String: Any], "status": "Failure", "reason": "NonZeroExitCode", "exitCode": code,
            "message": "command terminated with non-zero exit code: \(code)",
            "details": ["causes": [["reason": "ExitCode", "message": String(code)]]],
        ]
    }

    static func frame(_ channel: UInt8, _ bytes: some Collection<UInt8>) -> ByteBuffer {
        var buffer = ByteBuffer()
        buffer.reserveCapacity(bytes.count + 1)
        buffer.writeInteger(channel)
        buffer.writeBytes(bytes)
        return buffer
    }

    static func statusFrame(_ status: [String: Any]) -> ByteBuffer {
        frame(3, (try? JSONSerialization.data(withJSONObject: status, options: [.sortedKeys])) ?? Data("{}".utf8))
    }

    static func run(
        _ query: Query, principal: Principal, exec: ExecService, inbound: WebSocketInboundStream, outbound: WebSocketOutboundWriter, logger: Logger
    ) async {
        let session: any ExecSession
        do {
            session = try await exec.start(principal, workloadID: query.workloadID, task: query.task, request: query.request)
        } catch {
            let e = error as? CanopyError
            try? await outbound.write(
                .binary(statusFrame(["metadata": [:] as [String: Any], "status": "Failure", "reason": e?.code.rawValue ?? "InternalError", "message": e?.message ?? "\(error)"])))
            try? await outbound.close(.normalClosure, reason: nil)
            return
        }
        logger.info("exec started", metadata: ["workload.id": "\(query.workloadID)", "task": "\(query.task)", "user": "\(principal.user)"])
        let ended = Flag()
        await withTaskGroup(of: Void.self) { group in
            // Output, then the status, then the close (which also ends the input loop below).
            group.addTask {
                defer { ended.set() }
                for await chunk in session.output {
                    let buffer: ByteBuffer
                    switch chunk {
                    case .stdout(let bytes): buffer = frame(1, bytes)
                    case .stderr(let bytes): buffer = frame(2, bytes)
                    }
                    do { try await outbound.write(.binary(buffer)) } catch { break }
                }
                let code = await session.exitCode()
                try? await outbound.write(.binary(statusFrame(status(exitCode: code))))
                try? await outbound.close(.normalClosure, reason: nil)
            }
            // Standard input and resizes, in order, written by a task of their own: the loop that reads the
            // socket never waits on a command that does not read, so it always sees the client leave.
            let (input, feed) = AsyncStream<Input>.makeStream()
            let pending = PendingBytes()
            group.addTask {
                for await item in input {
                    switch item {
                    case .bytes(let bytes):
                        await session.write(bytes)
                        pending.remove(bytes.count)
                    case .resize(let rows, let columns): await session.resize(rows: rows, columns: columns)
                    case .end: await session.closeInput()
                    }
                }
            }
            if !query.stdin { feed.yield(.end) }
            group.addTask {
                defer { feed.finish() }
                do {
                    for try await message in inbound.messages(maxSize: maxMessage) {
                        guard case .binary(var buffer) = message, let channel = buffer.readInteger(as: UInt8.self) else { continue }
                        switch channel {
                        case 0:
                            let bytes = buffer.readBytes(length: buffer.readableBytes) ?? []
                            guard !bytes.isEmpty, query.stdin else { continue }
                            exec.noteInput(workloadID: query.workloadID)
                            // A client that sends faster than the command reads (a tar of gigabytes into a slow
                            // disk) is held back: the socket is read again once the command has taken half of what
                            // waits, or has ended. A client that leaves meanwhile is seen when reading resumes.
                            if pending.add(bytes.count) > maxPendingInput {
                                while pending.current - bytes.count > maxPendingInput / 2, !ended.isSet, !Task.isCancelled {
                                    try? await Task.sleep(for: .milliseconds(2))
                                }
                            }
                            feed.yield(.bytes(bytes))
                        case 4:
                            struct Size: Decodable {
                                var Width: Int
                                var Height: Int
                            }
                            if let size = try? JSONDecoder().decode(Size.self, from: Data(buffer.readableBytesView)) {
                                feed.yield(.resize(size.Height, size.Width))
                            }
                        case 255:
                            if buffer.readInteger(as: UInt8.self) == 0 { feed.yield(.end) }
                        default: continue
                        }
                    }
                } catch {}
                // The client went away (or closed first): the command goes too.
                await session.terminate()
            }
        }
        logger.info("exec ended", metadata: ["workload.id": "\(query.workloadID)", "task": "\(query.task)"])
    }
}
