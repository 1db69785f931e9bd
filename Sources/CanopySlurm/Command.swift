import CanopyHost
import Foundation

/// Runs a Slurm command to its end and captures what it printed.
struct Command: Sendable {
    /// What it printed and how it ended.
    struct Result: Sendable {
        var status: Int32
        var stdout: Data
        var stderr: String
        var ok: Bool { status == 0 }
    }

    /// The environment the commands get: the server's PATH, locale and Slurm settings (`SLURM_CONF` and the like),
    /// nothing else, so neither the server's secrets nor its `SBATCH_*` accidents reach a job.
    let environment: [String: String]

    init(serverEnvironment: [String: String]) {
        var env = ["PATH": serverEnvironment["PATH"] ?? "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8"]
        for (k, v) in serverEnvironment where k == "SLURM_CONF" || k == "MUNGE_SOCKET" { env[k] = v }
        env["HOME"] = serverEnvironment["HOME"] ?? "/"
        environment = env
    }

    /// Runs `argv` (its first word found on PATH); blocking reads happen on a Dispatch thread, not Swift's pool.
    func run(_ argv: [String], extraEnvironment: [String: String] = [:]) async throws -> Result {
        let environment = environment.merging(extraEnvironment) { _, extra in extra }
        return try await withCheckedThrowingContinuation { continuation in
            DispatchQueue.global().async {
                let p = Process()
                let program = argv[0].hasPrefix("/") ? argv[0] : TaskUser.findProgram(argv[0], path: environment["PATH"] ?? "") ?? argv[0]
                p.executableURL = URL(fileURLWithPath: program)
                p.arguments = Array(argv.dropFirst())
                p.environment = environment
                let out = Pipe()
                let err = Pipe()
                p.standardOutput = out
                p.standardError = err
                p.standardInput = FileHandle.nullDevice
                do {
                    try p.run()
                } catch {
                    continuation.resume(throwing: error)
                    return
                }
                // Both pipes are drained at once, or a command filling one would block on it forever.
                let errBox = ErrBox()
                let group = DispatchGroup()
                group.enter()
                DispatchQueue.global().async {
                    errBox.data = err.fileHandleForReading.readDataToEndOfFile()
                    group.leave()
                }
                let outData = out.fileHandleForReading.readDataToEndOfFile()
                group.wait()
                let errData = errBox.data
                p.waitUntilExit()
                continuation.resume(returning: Result(status: p.terminationStatus, stdout: outData, stderr: String(decoding: errData, as: UTF8.self)))
            }
        }
    }

    /// Standard error's bytes, handed from the reading thread back after `group.wait()`.
    private final class ErrBox: @unchecked Sendable { var data = Data() }
}
