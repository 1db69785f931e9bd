#if canImport(Glibc)
import Glibc
#endif
import CCanopySys
import CanopyCore
import Foundation
import Synchronization

/// An exec whose command talks through descriptors the server holds: a pseudo-terminal's master, or three pipes.
/// Reads happen on threads of their own (blocking reads never occupy Swift's cooperative pool), into a queue of
/// at most `maxChunks` chunks: when nobody takes its output, the readers stop reading and the command blocks on
/// its writes, as it would on a slow terminal.
package final class DescriptorExecSession: ExecSession, @unchecked Sendable {
    /// Ends the command.
    package typealias Terminator = @Sendable () async -> Void
    /// Sets the terminal's size another way than on a master the server holds (an engine's resize call).
    package typealias Resizer = @Sendable (_ rows: Int, _ columns: Int) async -> Void

    /// How the output descriptors carry the command's output.
    package enum Framing: Sendable {
        /// As it was written.
        case raw
        /// A container engine's multiplexed stream: frames of an 8-byte header (stream 1 stdout or 2 stderr, three
        /// zeros, the payload's size as a big-endian 32-bit number) and the payload.
        case engineMultiplexed
    }

    /// How standard input ends.
    package enum InputEnd: Sendable {
        /// Its descriptor is closed (a pipe).
        case close
        /// The terminal's EOF character (^D) is sent.
        case endOfTransmission
        /// The socket is shut down for writing (an engine's hijacked connection).
        case shutdownWrite
    }

    private let input: Int32
    private let outputs: [(fd: Int32, isError: Bool)]
    private let tty: Bool
    private let queue = ChunkQueue(maxChunks: 16)
    private let writes = DispatchQueue(label: "canopy-exec-input")
    private let exit = ExitBox()
    private let inputClosed = SharedFlag()
    private let terminator: Terminator
    private let resizer: Resizer?
    private let inputEnd: InputEnd
    package let output: AsyncStream<ExecOutput>

    /// Takes ownership of `input` (written to) and `outputs` (read from; the same descriptor as `input` for a
    /// terminal's master or a socket). `initial` is output already read (what followed an engine's response head).
    /// The runtime calls `ended` once the command has ended.
    package init(
        input: Int32, outputs: [(fd: Int32, isError: Bool)], tty: Bool, framing: Framing = .raw, initial: [UInt8] = [],
        inputEnd: InputEnd? = nil, resizer: Resizer? = nil, terminator: @escaping Terminator
    ) {
        self.input = input
        self.outputs = outputs
        self.tty = tty
        self.terminator = terminator
        self.resizer = resizer
        self.inputEnd = inputEnd ?? (tty ? .endOfTransmission : .close)
        let queue = queue
        output = AsyncStream(unfolding: { await queue.next() })
        let exit = exit
        queue.producers(outputs.count)
        for (fd, isError) in outputs {
            let thread = Thread {
                Self.readLoop(fd: fd, isError: isError, framing: framing, initial: initial, queue: queue, exit: exit)
            }
            thread.name = "canopy-exec-output"
            thread.start()
        }
    }

    /// Called by the runtime when the command has ended (its exit code, or 128 + signal; nil when unknown).
    package func ended(_ code: Int?) {
        exit.set(code)
    }

    private static func readLoop(fd: Int32, isError: Bool, framing: Framing, initial: [UInt8], queue: ChunkQueue, exit: ExitBox) {
        var buffer = [UInt8](repeating: 0, count: 65536)
        var frames = FrameReader()
        func deliver(_ bytes: [UInt8]) {
            switch framing {
            case .raw: queue.put(isError ? .stderr(bytes) : .stdout(bytes))
            case .engineMultiplexed: for chunk in frames.feed(bytes) { queue.put(chunk) }
            }
        }
        if !initial.isEmpty { deliver(initial) }
        var endedAt: Date?
        while true {
            if endedAt == nil, exit.isSet { endedAt = Date() }
            // The command has ended, and what it left running still writes: two seconds of that, then no more.
            if let endedAt, Date().timeIntervalSince(endedAt) > 2 { break }
            var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            let ready = poll(&p, 1, 200)
            if ready < 0 {
                if errno == EINTR { continue }
                break
            }
            if ready == 0 {
                // Quiet, and the command has ended: what it left running may hold the descriptor open forever.
                if exit.isSet { break }
                continue
            }
            let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n < 0 && errno == EINTR { continue }
            // EIO: a terminal whose every slave is closed.
            if n <= 0 { break }
            deliver(Array(buffer[0..<n]))
        }
        queue.producerDone()
    }

    package func write(_ bytes: [UInt8]) async {
        guard !inputClosed.withLock({ $0 }), !bytes.isEmpty else { return }
        let fd = input
        let closed = inputClosed
        await withCheckedContinuation { (done: CheckedContinuation<Void, Never>) in
            writes.async {
                // Input closed meanwhile (a pipe's descriptor may be closed, and its number reused): nothing more.
                if closed.withLock({ $0 }) { return done.resume() }
                var offset = 0
                while offset < bytes.count {
                    let n = bytes[offset...].withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) }
                    if n < 0 && errno == EINTR { continue }
                    if n <= 0 { break }
                    offset += n
                }
                done.resume()
            }
        }
    }

    package func closeInput() async {
        let fd = input
        let end = inputEnd
        let first = inputClosed.withLock { closed in
            defer { closed = true }
            return !closed
        }
        guard first else { return }
        await withCheckedContinuation { (done: CheckedContinuation<Void, Never>) in
            writes.async {
                switch end {
                case .endOfTransmission:
                    // A terminal has no end of file of its own: its EOF character (^D), at the start of a line.
                    var eof: [UInt8] = [4]
                    _ = Glibc.write(fd, &eof, 1)
                case .shutdownWrite: shutdown(fd, Int32(SHUT_WR))
                case .close: close(fd)
                }
                done.resume()
            }
        }
    }

    package func resize(rows: Int, columns: Int) async {
        guard tty, (1...10_000).contains(rows), (1...10_000).contains(columns) else { return }
        if let resizer { return await resizer(rows, columns) }
        var size = winsize(ws_row: UInt16(rows), ws_col: UInt16(columns), ws_xpixel: 0, ws_ypixel: 0)
        _ = ioctl(input, UInt(TIOCSWINSZ), &size)
    }

    package func exitCode() async -> Int? {
        await exit.wait()
    }

    package func terminate() async {
        if !exit.isSet { await terminator() }
    }

    deinit {
        // Every reader has finished (the session outlives its stream's consumer) or will see the exit; the
        // descriptors are closed once no thread can use them.
        let input = input
        let outputs = outputs
        let tty = tty
        let closed = inputClosed.withLock { $0 } && inputEnd == .close
        let queue = queue
        let writes = writes
        Thread {
            queue.waitForProducers()
            writes.sync {}
            if !closed { close(input) }
            for (fd, _) in outputs where fd != input { close(fd) }
        }.start()
    }
}

/// A flag shared with the input queue's blocks.
final class SharedFlag: Sendable {
    private let value = Mutex(false)
    func withLock<T>(_ body: (inout Bool) -> T) -> T { value.withLock { body(&$0) } }
}

/// Splits a container engine's multiplexed stream into its frames.
struct FrameReader {
    private var pending: [UInt8] = []

    mutating func feed(_ bytes: [UInt8]) -> [ExecOutput] {
        pending += bytes
        var out: [ExecOutput] = []
        var start = 0
        while pending.count - start >= 8 {
            let size = pending[(start + 4)..<(start + 8)].reduce(0) { $0 << 8 | Int($1) }
            guard pending.count - start - 8 >= size else { break }
            let payload = Array(pending[(start + 8)..<(start + 8 + size)])
            if !payload.isEmpty { out.append(pending[start] == 2 ? .stderr(payload) : .stdout(payload)) }
            start += 8 + size
        }
        pending.removeFirst(start)
        return out
    }
}

/// The exit code of an exec, set once, awaited by any number.
final class ExitBox: Sendable {
    private let state = Mutex<(set: Bool, code: Int?, waiters: [CheckedContinuation<Int?, Never>])>((false, nil, []))

    var isSet: Bool { state.withLock { $0.set } }

    func set(_ code: Int?) {
        let waiters = state.withLock { s -> [CheckedContinuation<Int?, Never>] in
            guard !s.set else { return [] }
            s.set = true
            s.code = code
            defer { s.waiters = [] }
            return s.waiters
        }
        for w in waiters { w.resume(returning: code) }
    }

    func wait() async -> Int? {
        await withCheckedContinuation { c in
            let now = state.withLock { s -> (Bool, Int?) in
                if s.set { return (true, s.code) }
                s.waiters.append(c)
                return (false, nil)
            }
            if now.0 { c.resume(returning: now.1) }
        }
    }
}

/// A bounded queue between blocking reader threads and one async consumer.
final class ChunkQueue: @unchecked Sendable {
    private let condition = NSCondition()
    private var chunks: [ExecOutput] = []
    private var activeProducers = 0
    private var waiter: CheckedContinuation<ExecOutput?, Never>?
    private let maxChunks: Int

    init(maxChunks: Int) { self.maxChunks = maxChunks }

    func producers(_ n: Int) {
        condition.lock()
        activeProducers = n
        condition.unlock()
    }

    /// Blocks the reader while the queue is full.
    func put(_ chunk: ExecOutput) {
        condition.lock()
        if let w = waiter {
            waiter = nil
            condition.unlock()
            w.resume(returning: chunk)
            return
        }
        while chunks.count >= maxChunks { condition.wait() }
        chunks.append(chunk)
        condition.unlock()
    }

    func producerDone() {
        condition.lock()
        activeProducers -= 1
        let finished = activeProducers == 0 && chunks.isEmpty
        let w = finished ? waiter : nil
        if finished { waiter = nil }
        condition.broadcast()
        condition.unlock()
        w?.resume(returning: nil)
    }

    func waitForProducers() {
        condition.lock()
        while activeProducers > 0 {
            // Nobody reads any more: let blocked readers through so that they see the end.
            chunks.removeAll()
            condition.broadcast()
            condition.wait(until: Date().addingTimeInterval(0.2))
        }
        condition.unlock()
    }

    /// The next chunk, or nil once every producer is done and the queue is empty.
    func next() async -> ExecOutput? {
        await withCheckedContinuation { c in
            condition.lock()
            if !chunks.isEmpty {
                let chunk = chunks.removeFirst()
                condition.broadcast()
                condition.unlock()
                c.resume(returning: chunk)
            } else if activeProducers == 0 {
                condition.unlock()
                c.resume(returning: nil)
            } else {
                waiter = c
                condition.unlock()
            }
        }
    }
}

extension DescriptorExecSession {
    /// Makes the terminator of an exec once its pid is known.
    package typealias TerminatorFactory = @Sendable (_ pid: pid_t) -> Terminator
    /// Makes the resizer of a terminal exec (its master, its pid); nil: the master is resized, as usual.
    package typealias ResizerFactory = @Sendable (_ master: Int32, _ pid: pid_t) -> Resizer

    /// Spawns `argv` for an exec, in a session of its own: under a new pseudo-terminal whose slave belongs to
    /// `ptyOwner` (sized `rows` x `columns` when both are sane) when `tty`, else with three pipes; returns the
    /// session reading and writing them, and the pid (the caller reaps it and calls `ended`).
    package static func spawn(
        path: String, argv: [String], env: [String], tty: Bool, rows: Int?, columns: Int?, ptyOwner: UInt32,
        resizer: ResizerFactory? = nil, terminator: TerminatorFactory
    ) throws -> (session: DescriptorExecSession, pid: pid_t) {
        if tty {
            var slave: Int32 = -1
            let size = rows.flatMap { r in columns.map { (r, $0) } }.flatMap { (1...10_000).contains($0.0) && (1...10_000).contains($0.1) ? $0 : nil }
            let master = canopy_open_pty(&slave, Int32(size?.0 ?? 0), Int32(size?.1 ?? 0), ptyOwner)
            guard master >= 0 else { throw CanopyError(.unavailable, "no pseudo-terminal: \(String(cString: strerror(errno)))") }
            defer { close(slave) }
            let pid: pid_t
            do {
                pid = try Spawner.spawn(path: path, argv: argv, env: env, stdio: [slave, slave, slave])
            } catch {
                close(master)
                throw error
            }
            let session = DescriptorExecSession(
                input: master, outputs: [(master, false)], tty: true, resizer: resizer?(master, pid), terminator: terminator(pid))
            return (session, pid)
        }
        // Every spawn of the server closes all descriptors above 2 in the child, so the moment between pipe and
        // FD_CLOEXEC leaks nothing.
        var made: [[Int32]] = []
        for _ in 0..<3 {
            var fds: [Int32] = [-1, -1]
            guard pipe(&fds) == 0 else {
                made.joined().forEach { close($0) }
                throw CanopyError(.unavailable, "no pipe: \(String(cString: strerror(errno)))")
            }
            for fd in fds { _ = fcntl(fd, F_SETFD, FD_CLOEXEC) }
            made.append(fds)
        }
        let (stdin, stdout, stderr) = (made[0], made[1], made[2])
        defer { [stdin[0], stdout[1], stderr[1]].forEach { close($0) } }
        let pid: pid_t
        do {
            pid = try Spawner.spawn(path: path, argv: argv, env: env, stdio: [stdin[0], stdout[1], stderr[1]])
        } catch {
            [stdin[1], stdout[0], stderr[0]].forEach { close($0) }
            throw error
        }
        return (DescriptorExecSession(input: stdin[1], outputs: [(stdout[0], false), (stderr[0], true)], tty: false, terminator: terminator(pid)), pid)
    }
}
