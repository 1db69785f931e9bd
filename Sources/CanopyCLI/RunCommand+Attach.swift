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
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask {
                try await withThrowingTaskGroup(of: Void.self) { logs in
                    for t in 0..<w.spec.tasks {
                        logs.addTask { try await followLogs(c, id: w.id, task: t, follow: true, prefix: w.spec.tasks > 1 ? "[task \(t)] " : nil) }
                    }
                    try await logs.waitForAll()
                }
            }
            group.addTask {
                var count = 0
                for await _ in interrupts {
                    count += 1
                    if count > 1 { Foundation.exit(130) }
                    FileHandle.standardError.write(Data("canopy: stopping \(w.id) (Ctrl-C again to detach)\n".utf8))
                    _ = try? await c.raw(.POST, "/workloads/\(w.id)/stop")
                }
            }
            try await group.next()
            group.cancelAll()
        }
        var final = try await c.call(.GET, "/workloads/\(w.id)", as: Workload.self)
        var waits = 0
        while !final.phase.isTerminal && final.phase != .stopped && waits < 600 {
            try await Task.sleep(for: .milliseconds(50))
            final = try await c.call(.GET, "/workloads/\(w.id)", as: Workload.self)
            waits += 1
        }
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
