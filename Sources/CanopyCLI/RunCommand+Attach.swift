import CanopyCore
import Dispatch
import Foundation

extension RunCommand {
    /// Streams the output until the workload ends; Ctrl-C stops it (twice: detach at once).
    func attach(_ c: CanopyClient, _ w: Workload) async throws -> Int32 {
        signal(SIGINT, SIG_IGN)
        let source = DispatchSource.makeSignalSource(signal: SIGINT)
        let (interrupts, interrupted) = AsyncStream<Void>.makeStream()
        source.setEventHandler { interrupted.yield() }
        source.resume()
        defer { source.cancel() }
        // Attaching is over when the logs end (or on a second Ctrl-C); the wait reporter hands back what it has said.
        enum Event: Sendable {
            case over
            case reported(WaitReporter.State)
        }
        var said = try await withThrowingTaskGroup(of: Event.self) { group in
            group.addTask {
                try await withThrowingTaskGroup(of: Void.self) { logs in
                    for t in 0..<w.spec.tasks {
                        logs.addTask { try await followLogs(c, id: w.id, task: t, follow: true, prefix: w.spec.tasks > 1 ? "[task \(t)] " : nil) }
                    }
                    try await logs.waitForAll()
                }
                return .over
            }
            group.addTask {
                .reported(await WaitReporter(client: c).report(from: w))
            }
            group.addTask {
                var count = 0
                for await _ in interrupts {
                    count += 1
                    if count > 1 { Foundation.exit(130) }
                    FileHandle.standardError.write(Data("canopy: stopping \(w.id) (Ctrl-C again to detach)\n".utf8))
                    _ = try? await c.raw(.POST, "/workloads/\(w.id)/stop")
                }
                return .over
            }
            var said = WaitReporter.State()
            var over = false
            while !over, let event = try await group.next() {
                if case .reported(let state) = event { said = state } else { over = true }
            }
            group.cancelAll()
            while let event = try await group.next() {
                if case .reported(let state) = event { said = state }
            }
            return said
        }
        var final = try await c.call(.GET, "/workloads/\(w.id)", as: Workload.self)
        var waits = 0
        while !final.phase.isTerminal && final.phase != .stopped && waits < 600 {
            try await Task.sleep(for: .milliseconds(50))
            final = try await c.call(.GET, "/workloads/\(w.id)", as: Workload.self)
            waits += 1
        }
        // A workload that ran between two looks of the reporter has not been said to start yet.
        if let line = WaitReporter.step(final, &said).line { FileHandle.standardError.write(Data((line + "\n").utf8)) }
        switch final.phase {
        case .succeeded:
            return 0
        default:
            let why = final.reason.map { ": \($0.message)" } ?? ""
            FileHandle.standardError.write(Data("canopy: workload \(final.id) \(final.phase.rawValue)\(why)\n".utf8))
            if let code = final.exitCode, code != 0 { return Int32(truncatingIfNeeded: code) }
            return final.phase == .cancelled ? 130 : 1
        }
    }
}
