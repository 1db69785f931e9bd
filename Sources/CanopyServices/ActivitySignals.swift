import CanopyCore
import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// Signs of use that an instance gives only when asked, for idle stop: its app's own word (JupyterLab's kernels
/// API: a kernel `busy` running a cell that sleeps or waits on I/O uses no CPU, yet someone waits for it), and the
/// user's probe command (`idleProbe`), run in task 0 as `canopy exec` would, exit status 0 meaning in use.
enum ActivitySignals {
    /// How long a probe command or an app's answer may take; slower counts as no sign of use.
    static let timeout: Duration = .seconds(10)

    /// Whether the app of `w` says it is in use (see `AppDefinition.activityPath`).
    static func appBusy(_ w: Workload, handle: String, apps: AppService, connector: any TaskPortConnector) async -> Bool {
        guard let name = w.spec.app, let app = try? apps.definition(name), let path = app.activityPath, let port = w.spec.ports.first?.port else {
            return false
        }
        guard let fd = try? await connector.connect(workloadID: w.id, taskIndex: 0, handle: handle, port: port) else { return false }
        var request = "GET \(apps.basePath(workloadID: w.id, task: 0, port: port))\(path) HTTP/1.0\r\nHost: 127.0.0.1\r\nAccept: application/json\r\n"
        if let header = apps.header(for: w, port: port) { request += "\(header.name): \(header.value)\r\n" }
        request += "\r\n"
        let answer = await exchange(fd: fd, request: Array(request.utf8))
        return kernelsBusy(answer)
    }

    /// Whether an HTTP answer (head and body) is a 200 whose JSON array lists a kernel whose state is `busy`.
    static func kernelsBusy(_ answer: [UInt8]) -> Bool {
        guard let end = answer.firstRange(of: Array("\r\n\r\n".utf8)) else { return false }
        let head = String(decoding: answer[..<end.lowerBound], as: UTF8.self)
        guard head.hasPrefix("HTTP/1."), head.split(separator: " ").dropFirst().first == "200" else { return false }
        guard let kernels = try? JSONSerialization.jsonObject(with: Data(answer[end.upperBound...])) as? [[String: Any]] else { return false }
        return kernels.contains { $0["execution_state"] as? String == "busy" }
    }

    /// Sends `request` on the connected socket `fd` (which it closes) and reads the answer to its end: at most
    /// 4 MiB within 5 seconds in all (an app that answers a byte at a time is cut off: no sign of use); on a
    /// thread of its own.
    static func exchange(fd: Int32, request: [UInt8]) async -> [UInt8] {
        await withCheckedContinuation { continuation in
            Thread.detachNewThread {
                defer { close(fd) }
                let deadline = Date().addingTimeInterval(5)
                func waitAtMost(_ option: Int32) -> Bool {
                    let left = deadline.timeIntervalSinceNow
                    guard left > 0 else { return false }
                    var wait = timeval(tv_sec: Int(left), tv_usec: Int((left - left.rounded(.down)) * 1_000_000))
                    if wait.tv_sec == 0 && wait.tv_usec == 0 { wait.tv_usec = 1 }
                    return setsockopt(fd, SOL_SOCKET, option, &wait, socklen_t(MemoryLayout<timeval>.size)) == 0
                }
                guard waitAtMost(SO_SNDTIMEO) else { return continuation.resume(returning: []) }
                let sent = request.withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
                guard sent == request.count else { return continuation.resume(returning: []) }
                var answer: [UInt8] = []
                var buffer = [UInt8](repeating: 0, count: 65536)
                while answer.count < 4 << 20, waitAtMost(SO_RCVTIMEO) {
                    let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
                    if n <= 0 { break }
                    answer += buffer[0..<n]
                }
                continuation.resume(returning: deadline.timeIntervalSinceNow > 0 ? answer : [])
            }
        }
    }

    /// Runs the workload's probe command in task 0; true when it exits 0 within `timeout` (it is ended otherwise).
    static func probeSucceeds(_ w: Workload, command: [String], handle: String, runner: any TaskExecRunner) async -> Bool {
        guard let session = try? await runner.exec(workloadID: w.id, taskIndex: 0, handle: handle, request: ExecRequest(command: command, workdir: w.spec.workdir))
        else { return false }
        await session.closeInput()
        let code: Int? = await withTaskGroup(of: Int??.self) { group in
            group.addTask {
                for await _ in session.output {}
                return .some(await session.exitCode())
            }
            group.addTask {
                // Too slow: ended, which ends its output, and so the reader above.
                try? await Task.sleep(for: timeout)
                if !Task.isCancelled { await session.terminate() }
                return .none
            }
            let first = await group.next() ?? nil
            group.cancelAll()
            return first ?? nil
        }
        return code == 0
    }
}
