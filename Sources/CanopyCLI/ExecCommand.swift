import ArgumentParser
import CanopyCore
import Foundation
import HTTPTypes
import HummingbirdWSClient
import Logging
import NIOCore

#if canImport(Glibc)
import Glibc
#endif

struct ExecCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "exec", abstract: "Run a command inside a running task.",
        usage: "canopy exec [-i] [-t] [--task N] ID -- COMMAND [ARGS...]",
        discussion: """
            The command runs inside the task's container, or, for a process task, as the task's user in its cgroups, \
            working directory and private /tmp, with the environment the task started with. canopy exec exits with the \
            command's exit code. -i passes standard input; -t gives the command a terminal (canopy exec -it ID -- bash \
            for a shell: your terminal is put in raw mode, and resizing it resizes the command's). Only the workload's \
            owner or an admin may exec into it. The API is a WebSocket: GET /api/v1/workloads/ID/exec?command=...
            """)

    @Flag(name: [.customShort("i"), .long], help: "Pass standard input to the command.") var stdin = false
    @Flag(name: [.customShort("t"), .long], help: "Give the command a pseudo-terminal.") var tty = false
    @Option(help: "The task.") var task: Int = 0
    @Argument(help: "The workload.") var id: String
    @Argument(parsing: .captureForPassthrough, help: "The command and its arguments.") var command: [String] = []

    func validate() throws {
        if Self.arguments(command).isEmpty { throw ValidationError("give the command to run: canopy exec ID -- COMMAND [ARGS...]") }
    }

    static func arguments(_ command: [String]) -> [String] {
        command.first == "--" ? Array(command.dropFirst()) : command
    }

    /// The WebSocket address of the exec: the server's address with ws or wss, and the command in the query.
    static func url(base: String, id: String, task: Int, command: [String], tty: Bool, stdin: Bool, size: (rows: Int, columns: Int)?) -> String {
        let scheme = base.hasPrefix("https://") ? "wss://" + base.dropFirst(8) : base.hasPrefix("http://") ? "ws://" + base.dropFirst(7) : Substring(base)
        return "\(scheme)/api/v1" + path(id: id, task: task, command: command, tty: tty, stdin: stdin, size: size)
    }

    /// The path under /api/v1, with the query.
    static func path(id: String, task: Int, command: [String], tty: Bool, stdin: Bool, size: (rows: Int, columns: Int)?) -> String {
        var c = URLComponents()
        var items = command.map { URLQueryItem(name: "command", value: $0) }
        items.append(URLQueryItem(name: "task", value: String(task)))
        if tty { items.append(URLQueryItem(name: "tty", value: "true")) }
        if stdin { items.append(URLQueryItem(name: "stdin", value: "true")) }
        if let size {
            items.append(URLQueryItem(name: "rows", value: String(size.rows)))
            items.append(URLQueryItem(name: "cols", value: String(size.columns)))
        }
        c.queryItems = items
        let query = (c.percentEncodedQuery ?? "").replacingOccurrences(of: "+", with: "%2B")
        let escaped = id.addingPercentEncoding(withAllowedCharacters: .urlPathAllowed.subtracting(CharacterSet(charactersIn: "/?#"))) ?? id
        return "/workloads/\(escaped)/exec?\(query)"
    }

    /// The size of the terminal on `fd`, if it is one.
    static func terminalSize(_ fd: Int32) -> (rows: Int, columns: Int)? {
        var size = winsize()
        guard ioctl(fd, UInt(TIOCGWINSZ), &size) == 0, size.ws_row > 0, size.ws_col > 0 else { return nil }
        return (Int(size.ws_row), Int(size.ws_col))
    }

    func run() async throws {
        let args = Self.arguments(command)
        try await client { c in
            let interactiveTTY = tty && isatty(0) == 1
            let size = tty ? Self.terminalSize(1) ?? Self.terminalSize(0) : nil
            var headers = HTTPFields()
            if let token = c.token { headers[.authorization] = "Bearer \(token)" }
            headers[.secWebSocketProtocol] = "v5.channel.k8s.io"
            let url = Self.url(base: c.baseURL, id: id, task: task, command: args, tty: tty, stdin: stdin, size: size)
            // The command travels in the request line, which HTTP servers bound (64 KiB here).
            guard url.utf8.count < 60_000 else {
                throw CLIError("the command is too long to send (\(url.utf8.count) bytes encoded); put a long script on standard input: canopy exec -i \(id) -- sh < script.sh")
            }
            let exit = ExitCodeBox()
            var saved = termios()
            let raw = interactiveTTY && tcgetattr(0, &saved) == 0
            if raw {
                Self.termiosAtStart = saved
                var t = saved
                cfmakeraw(&t)
                tcsetattr(0, TCSANOW, &t)
            }
            defer { if raw { tcsetattr(0, TCSANOW, &saved) } }
            var logger = Logger(label: "canopy-exec")
            logger.logLevel = .critical
            let passInput = stdin
            let watchSize = tty
            do {
                try await WebSocketClient.connect(
                    url: url, configuration: .init(maxFrameSize: 1 << 20, additionalHeaders: headers, closeTimeout: .seconds(2)), logger: logger
                ) { inbound, outbound, _ in
                    try await withThrowingTaskGroup(of: Void.self) { group in
                        if passInput {
                            group.addTask {
                                let (chunks, credit) = Self.standardInput()
                                for await chunk in chunks {
                                    if chunk.isEmpty {
                                        try await outbound.write(.binary(ByteBuffer(bytes: [255, 0])))
                                        break
                                    }
                                    try await outbound.write(.binary(ByteBuffer(bytes: [0] + chunk)))
                                    credit.signal()
                                }
                            }
                        }
                        if watchSize {
                            group.addTask {
                                for await _ in Self.windowChanges() {
                                    guard let s = Self.terminalSize(1) ?? Self.terminalSize(0) else { continue }
                                    try await outbound.write(.binary(ByteBuffer(bytes: [4] + Array(#"{"Width":\#(s.columns),"Height":\#(s.rows)}"#.utf8))))
                                }
                            }
                        }
                        reading: for try await message in inbound.messages(maxSize: 16 << 20) {
                            guard case .binary(var buffer) = message, let channel = buffer.readInteger(as: UInt8.self) else { continue }
                            let bytes = buffer.readBytes(length: buffer.readableBytes) ?? []
                            switch channel {
                            case 1: Self.writeAll(1, bytes)
                            case 2: Self.writeAll(2, bytes)
                            case 3:
                                // The command has ended and nothing but the close follows: the close handshake is
                                // not waited for, and should the connection's end not come, the CLI exits anyway.
                                let result = Self.exitCode(fromStatus: bytes)
                                exit.set(result)
                                Self.exitLater(result)
                                break reading
                            default: continue
                            }
                        }
                        group.cancelAll()
                    }
                }
            } catch {
                if raw { tcsetattr(0, TCSANOW, &saved) }
                // The command ended and said how: a failure after that (the server closing first) does not matter.
                if let result = exit.get() {
                    if let message = result.message { printErr("canopy: \(message)") }
                    if result.code != 0 { throw ExitCode(Int32(truncatingIfNeeded: result.code)) }
                    return
                }
                // Not upgraded: the same path without an upgrade says why, in the API's words.
                _ = try await c.raw(.GET, Self.path(id: id, task: task, command: args, tty: tty, stdin: stdin, size: size))
                throw c.unreachable(error)
            }
            if raw { tcsetattr(0, TCSANOW, &saved) }
            guard let result = exit.get() else { throw CLIError("the connection ended before the command did") }
            if let message = result.message { printErr("canopy: \(message)") }
            if result.code != 0 { throw ExitCode(Int32(truncatingIfNeeded: result.code)) }
        }
    }

    /// The exit code in a status message (see the server's `ExecSocket`): 0 for success, the command's code for a
    /// non-zero exit, 1 with a message when it could not run.
    static func exitCode(fromStatus bytes: [UInt8]) -> (code: Int, message: String?) {
        guard let object = try? JSONSerialization.jsonObject(with: Data(bytes)) as? [String: Any] else { return (1, "an unreadable status") }
        if object["status"] as? String == "Success" { return (0, nil) }
        if let code = object["exitCode"] as? Int { return (code, nil) }
        return (1, object["message"] as? String ?? "the command failed")
    }

    /// The terminal's settings before raw mode, restored by `exitLater`.
    nonisolated(unsafe) static var termiosAtStart: termios?

    /// Exits with the command's code in 5 seconds, unless the CLI has ended by then: a connection whose close never
    /// completes (seen once under load: the server's close arrived, and the WebSocket client went on waiting) must
    /// not keep the command's result from the caller.
    static func exitLater(_ result: (code: Int, message: String?)) {
        let restore = termiosAtStart
        Thread.detachNewThread {
            Thread.sleep(forTimeInterval: 5)
            if var t = restore { tcsetattr(0, TCSANOW, &t) }
            if let message = result.message { FileHandle.standardError.write(Data("canopy: \(message)\n".utf8)) }
            // _exit: the main thread may be exiting too, and standard output is written straight, never buffered.
            Glibc._exit(Int32(truncatingIfNeeded: result.code))
        }
    }

    static func writeAll(_ fd: Int32, _ bytes: [UInt8]) {
        var offset = 0
        while offset < bytes.count {
            let n = bytes[offset...].withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) }
            if n < 0 && errno == EINTR { continue }
            if n <= 0 { return }
            offset += n
        }
    }

    /// Standard input in chunks, read on a thread of its own; an empty chunk at its end. The reader waits for a
    /// credit (signal it once a chunk is sent) before reading more than 8 chunks ahead.
    static func standardInput() -> (AsyncStream<[UInt8]>, Credit) {
        let credit = Credit(8)
        let stream = AsyncStream<[UInt8]> { continuation in
            Thread {
                var buffer = [UInt8](repeating: 0, count: 32768)
                while true {
                    credit.wait()
                    let n = buffer.withUnsafeMutableBytes { read(0, $0.baseAddress, $0.count) }
                    if n < 0 && errno == EINTR { continue }
                    if n <= 0 {
                        continuation.yield([])
                        break
                    }
                    continuation.yield(Array(buffer[0..<n]))
                }
                continuation.finish()
            }.start()
        }
        return (stream, credit)
    }

    /// SIGWINCH, as a stream.
    static func windowChanges() -> AsyncStream<Void> {
        AsyncStream { continuation in
            signal(SIGWINCH, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: SIGWINCH)
            source.setEventHandler { continuation.yield() }
            source.resume()
            let cancel = SourceBox(source)
            continuation.onTermination = { _ in cancel.source.cancel() }
        }
    }
}

/// A counting semaphore (a DispatchSemaphore may not be released below its initial value).
final class Credit: @unchecked Sendable {
    private let condition = NSCondition()
    private var available: Int
    init(_ n: Int) { available = n }
    func wait() {
        condition.lock()
        while available == 0 { condition.wait() }
        available -= 1
        condition.unlock()
    }
    func signal() {
        condition.lock()
        available += 1
        condition.signal()
        condition.unlock()
    }
}

/// A dispatch source, cancelled from a stream's termination handler.
final class SourceBox: @unchecked Sendable {
    let source: any DispatchSourceSignal
    init(_ source: any DispatchSourceSignal) { self.source = source }
}

/// The exit status an exec reported, once.
final class ExitCodeBox: @unchecked Sendable {
    private let lock = NSLock()
    private var value: (code: Int, message: String?)?
    func set(_ v: (code: Int, message: String?)) { lock.withLock { value = v } }
    func get() -> (code: Int, message: String?)? { lock.withLock { value } }
}
