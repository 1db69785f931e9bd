import CanopyCore
import CanopyTesting
import Foundation
import Testing

@testable import CanopyCLI

#if canImport(Glibc)
    import Glibc
#endif

/// Runs the `canopy` binary with a token of its own (another user's, or none) against `url`.
private func canopy(_ args: [String], url: String, token: String) async throws -> (status: Int32, stdout: String, stderr: String) {
    try await runProcess(buildProductsDir + "/canopy", args, env: ["CANOPY_URL": url, "CANOPY_TOKEN": token])
}

/// The cells of a table row (cells are separated by two spaces or more).
private func cells(_ line: Substring) -> [String] {
    line.split(separator: #/  +/#).map(String.init)
}

/// Workloads of the server, every phase, as `canopy ps -o json` shows them.
private func workloads(_ server: ServerProcess) async throws -> [[String: Any]] {
    let ps = try await server.cli(["ps", "--all", "-o", "json"])
    return try #require(try JSONSerialization.jsonObject(with: Data(ps.stdout.utf8)) as? [[String: Any]], "\(ps)")
}

@Suite("the CLI as a new user meets it, against a live server", .serialized)
struct CLILiveTests {
    @Test("help, typos and bad values before the command submit nothing")
    func nothingSubmitted() async throws {
        try await ServerProcess.with(dataDir: try makeTempDir("canopy-cli"), removeAfter: true) { server in
            for args in [["run", "--help"], ["run", "-h"], ["run", "--gpus", "1", "--help", "--", "true"]] {
                let r = try await server.cli(args)
                #expect(r.status == 0 && r.stdout.hasPrefix("OVERVIEW: Run a workload"), "\(args): \(r)")
            }
            let typos: [([String], String)] = [
                (["run", "--gpu", "1", "--", "true"], "Error: Unknown option '--gpu'. Did you mean '--gpus'?\n"),
                (["run", "--memroy", "1Gi", "--", "true"], "Error: Unknown option '--memroy'. Did you mean '--memory'?\n"),
                (
                    ["run", "--memory", "512m", "--", "true"],
                    "Error: --memory 512m: lowercase m means milli, as in --cpus 500m; did you mean 512Mi?\n"
                ),
                (["run", "--cpus", "-1", "true"], "Error: --cpus must be positive, e.g. 2, 0.5 or 500m\n"),
                (["run", "--hold"], "Error: give the command to run, e.g. canopy run -- echo hello\n"),
            ]
            for (args, firstLine) in typos {
                let r = try await server.cli(args)
                #expect(r.status == 64, "\(args): \(r)")
                #expect(r.stderr.hasPrefix(firstLine) && r.stderr.contains("Usage: canopy run"), "\(args): \(r.stderr)")
            }
            #expect(try await workloads(server).isEmpty)
        }
    }

    @Test("a command without -- runs with its own options untouched; a run that starts at once says nothing on stderr")
    func withoutTerminator() async throws {
        try await ServerProcess.with(dataDir: try makeTempDir("canopy-cli"), removeAfter: true) { server in
            let py = try await server.cli(["run", "--cpus", "0.5", "python3", "-c", "import sys; print(1, sys.argv[1:])", "--epochs", "3"])
            #expect(py.status == 0 && py.stdout == "1 ['--epochs', '3']\n" && py.stderr == "", "\(py)")
            let sh = try await server.cli(["run", "--", "sh", "-c", "echo \"$@\"", "sh", "--flag", "--", "-x"])
            #expect(sh.status == 0 && sh.stdout == "--flag -- -x\n" && sh.stderr == "", "\(sh)")
        }
    }

    @Test("ps shows tenant and owner to an admin, the held state, no repeated id as name, and plural counts")
    func psColumns() async throws {
        try await ServerProcess.with(dataDir: try makeTempDir("canopy-cli"), removeAfter: true) { server in
            let token = try await server.cli(["tokens", "create", "--user", "alice", "--tenant", "lab"])
            let alice = token.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
            #expect(token.status == 0 && !alice.isEmpty, "\(token)")
            let held = try await canopy(["run", "-d", "--hold", "--gpus", "2", "--cpus", "2", "--", "true"], url: server.url, token: alice)
            let id = held.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
            #expect(held.status == 0 && Base62.isValid(id), "\(held)")

            let admin = try await server.cli(["ps", "--all"]).stdout.split(separator: "\n")
            #expect(cells(try #require(admin.first)) == ["ID", "NAME", "TENANT", "OWNER", "QUEUE", "STATUS", "REASON", "RESOURCES", "CREATED", "COMMAND"])
            var row = cells(try #require(admin.dropFirst().first))
            #expect(row.count == 10)
            row[8] = "CREATED"
            #expect(row == [id, "-", "lab", "alice", "default", "Pending #1", "Held", "2 CPUs, 1Gi, 2 GPUs", "CREATED", "true"])

            // A user sees their own tenant only: no TENANT column.
            let mine = try await canopy(["ps"], url: server.url, token: alice).stdout.split(separator: "\n")
            #expect(cells(try #require(mine.first)) == ["ID", "NAME", "OWNER", "QUEUE", "STATUS", "REASON", "RESOURCES", "CREATED", "COMMAND"])
            #expect(try await server.cli(["show", id]).stdout.contains("Name            -\n"))
        }
    }

    @Test("a foreground run says why it waits, when the reason changes and when it starts; stdout keeps the task's output")
    func waiting() async throws {
        try await ServerProcess.with(dataDir: try makeTempDir("canopy-cli"), removeAfter: true) { server in
            // Given a workload that holds both GPUs...
            let blocker = try await server.cli(["run", "-d", "--gpus", "2", "--", "sleep", "120"])
            let blockerID = blocker.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
            let running = try await eventually(timeout: .seconds(30)) {
                try await server.cli(["show", "-o", "json", blockerID]).stdout.contains(#""phase" : "Running""#)
            }
            try #require(running, "the blocker did not start")
            // ...a held foreground run that needs one: it says it is held, then (released) that it waits for GPUs.
            let run = try RunningCLI(["run", "--hold", "--gpus", "1", "--", "echo", "ran"], server: server)
            let held = try await run.stderr(until: "[Held]")
            let line = try #require(held.split(separator: "\n").last.map(String.init))
            let id = try #require(line.split(separator: " ").dropFirst(2).first.map(String.init), "\(line)")
            #expect(line == "canopy: workload \(id) is pending: held until released (canopy release ID) [Held]")
            #expect(try await server.cli(["release", id]).status == 0)
            let waiting = try await run.stderr(until: "[InsufficientResources]")
            #expect(waiting.split(separator: "\n").last?.hasPrefix("canopy: workload \(id) is pending: ") == true, "\(waiting)")
            // When the GPUs are free, it starts and runs.
            #expect(try await server.cli(["stop", blockerID]).status == 0)
            let (status, stdout, stderr) = try await run.finish()
            #expect(status == 0 && stdout == "ran\n", "\(status) \(stdout) \(stderr)")
            #expect(stderr.hasSuffix("canopy: workload \(id) started\n"), "\(stderr)")
            #expect(stderr.hasPrefix(line + "\n"), "\(stderr)")
        }
    }

    @Test("data get of a directory recreates the tree")
    func recursiveGet() async throws {
        try await ServerProcess.with(dataDir: try makeTempDir("canopy-cli"), removeAfter: true) { server in
            let dir = try makeTempDir("canopy-cli-local")
            defer { try? FileManager.default.removeItem(atPath: dir) }
            try FileManager.default.createDirectory(atPath: dir + "/tree/sub/deeper", withIntermediateDirectories: true)
            try "one\n".write(toFile: dir + "/tree/a.txt", atomically: true, encoding: .utf8)
            try "two\n".write(toFile: dir + "/tree/sub/b.txt", atomically: true, encoding: .utf8)
            try "three\n".write(toFile: dir + "/tree/sub/deeper/c.txt", atomically: true, encoding: .utf8)
            #expect(try await server.cli(["data", "put", dir + "/tree", "/user/me/tree"]).status == 0)
            let get = try await server.cli(["data", "get", "/user/me/tree/", dir + "/copy"])
            #expect(get.status == 0, "\(get)")
            #expect(get.stdout == [dir + "/copy/a.txt", dir + "/copy/sub/b.txt", dir + "/copy/sub/deeper/c.txt"].map { $0 + "\n" }.joined())
            for (path, content) in [("a.txt", "one\n"), ("sub/b.txt", "two\n"), ("sub/deeper/c.txt", "three\n")] {
                #expect(try String(contentsOfFile: dir + "/copy/" + path, encoding: .utf8) == content, "\(path)")
            }
            // A file into an existing directory lands inside it, as with cp.
            #expect(try await server.cli(["data", "get", "/user/me/tree/a.txt", dir + "/copy/sub"]).status == 0)
            #expect(try String(contentsOfFile: dir + "/copy/sub/a.txt", encoding: .utf8) == "one\n")
            let stdout = try await server.cli(["data", "get", "/user/me/tree", "-"])
            #expect(stdout.status == 1 && stdout.stderr == "canopy: /user/me/tree is a directory; give a local directory to copy it into\n")
        }
    }

    @Test("version, usage and an unreachable server read well")
    func withoutServer() async throws {
        let nowhere = "http://127.0.0.1:9"
        let version = try await canopy(["--version"], url: nowhere, token: "x")
        #expect(version.status == 0 && version.stdout == CanopyVersion.current + "\n")
        let bare = try await canopy([], url: nowhere, token: "x")
        #expect(bare.stdout.contains("USAGE: canopy <subcommand>"), "\(bare)")
        let ps = try await canopy(["ps"], url: nowhere, token: "x")
        #expect(ps.status == 1)
        #expect(
            ps.stderr
                == "canopy: cannot reach the Canopy server at \(nowhere): connection refused. Start one with `canopy serve`, or set CANOPY_URL to its address.\n"
        )
    }
}

/// A `canopy` command left running, whose standard error the test reads as it comes.
private final class RunningCLI: @unchecked Sendable {
    let process = Process()
    let out = Pipe()
    let err = Pipe()
    private var seen = ""

    init(_ args: [String], server: ServerProcess, timeout: TimeInterval = 60) throws {
        process.executableURL = URL(fileURLWithPath: buildProductsDir + "/canopy")
        process.arguments = args
        var env = ProcessInfo.processInfo.environment
        env["CANOPY_URL"] = server.url
        env["CANOPY_TOKEN"] = server.token
        process.environment = env
        process.standardOutput = out
        process.standardError = err
        process.standardInput = FileHandle.nullDevice
        try process.run()
        // A watchdog, not a wait: a run that never gets where the test expects is killed, so reads end and the test fails.
        let p = process
        DispatchQueue.global().asyncAfter(deadline: .now() + timeout) { if p.isRunning { kill(p.processIdentifier, SIGKILL) } }
    }

    /// Standard error so far, read until it contains `marker` (or ends: then the test fails).
    func stderr(until marker: String) async throws -> String {
        let handle = err.fileHandleForReading
        var text = seen
        text = try await offPool { [text] in
            var text = text
            while !text.contains(marker) {
                let chunk = handle.availableData
                if chunk.isEmpty { break }
                text += String(decoding: chunk, as: UTF8.self)
            }
            return text
        }
        seen = text
        try #require(text.contains(marker), "no \(marker) in: \(text)")
        return text
    }

    /// Waits for the end; the exit status, all of stdout and all of stderr.
    func finish() async throws -> (Int32, String, String) {
        let (process, out, err, seen) = (self.process, self.out, self.err, self.seen)
        return try await offPool {
            let rest = err.fileHandleForReading.readDataToEndOfFile()
            let stdout = out.fileHandleForReading.readDataToEndOfFile()
            process.waitUntilExit()
            return (process.terminationStatus, String(decoding: stdout, as: UTF8.self), seen + String(decoding: rest, as: UTF8.self))
        }
    }
}
