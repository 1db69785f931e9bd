import CanopyCore
import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// A `canopy serve` child process on a free port, for tests over real sockets.
/// Everything that waits on it runs off the cooperative pool (see `offPool`).
public final class ServerProcess: @unchecked Sendable {
    public let dataDir: String
    public let process = Process()
    public private(set) var url = ""
    public private(set) var token = ""

    private init(dataDir: String) {
        self.dataDir = dataDir
    }

    /// Starts a server and waits until it has written its URL and admin token.
    public static func start(dataDir: String, extra: [String] = [], imagePolicy: String = "processes") async throws -> ServerProcess {
        let server = ServerProcess(dataDir: dataDir)
        let process = server.process
        process.executableURL = URL(fileURLWithPath: buildProductsDir + "/canopy")
        process.arguments =
            [
                "serve", "--data-dir", dataDir, "--port", "0", "--gpus", "T4:2", "--cpus", "4", "--memory",
                "8Gi", "--stop-grace", "1",
                // Without a container engine, image workloads (client.py's) run as processes.
                "--image-policy", imagePolicy,
                "--log-level", "warning",
            ] + extra
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try? FileManager.default.removeItem(atPath: dataDir + "/url")
        try process.run()
        let started = ContinuousClock.now
        while ContinuousClock.now - started < .seconds(30) {
            if let u = try? String(contentsOfFile: dataDir + "/url", encoding: .utf8),
                let t = try? String(contentsOfFile: dataDir + "/admin.token", encoding: .utf8)
            {
                server.url = u.trimmingCharacters(in: .whitespacesAndNewlines)
                server.token = t.trimmingCharacters(in: .whitespacesAndNewlines)
                return server
            }
            try await Task.sleep(for: .milliseconds(20))
        }
        await server.kill9()
        throw CanopyError(.internal, "server did not start in 30 s")
    }

    /// Runs `body` against a fresh server and stops the server afterwards, whatever `body` did.
    public static func with<T>(
        dataDir: String, removeAfter: Bool = false, extra: [String] = [], imagePolicy: String = "processes", _ body: (ServerProcess) async throws -> T
    ) async throws -> T {
        let server = try await start(dataDir: dataDir, extra: extra, imagePolicy: imagePolicy)
        do {
            let result = try await body(server)
            await server.stopAll()
            await server.terminate()
            if removeAfter { try? FileManager.default.removeItem(atPath: dataDir) }
            return result
        } catch {
            await server.stopAll()
            await server.terminate()
            throw error
        }
    }

    /// Stops every unfinished workload (the server leaves running tasks running when it stops, and a test must not
    /// leave processes behind), waiting up to 20 s for them to end.
    public func stopAll() async {
        func active() async -> [String] {
            guard let ps = try? await cli(["ps", "-o", "json"]),
                let items = (try? JSONSerialization.jsonObject(with: Data(ps.stdout.utf8))) as? [[String: Any]]
            else { return [] }
            return items.filter { ["Pending", "Starting", "Running", "Stopping"].contains($0["phase"] as? String ?? "") }.compactMap { $0["id"] as? String }
        }
        let deadline = Date().addingTimeInterval(20)
        var ids = await active()
        while !ids.isEmpty && Date() < deadline {
            _ = try? await cli(["stop"] + ids)
            try? await Task.sleep(for: .milliseconds(200))
            ids = await active()
        }
    }

    public func kill9() async {
        kill(process.processIdentifier, SIGKILL)
        let process = self.process
        _ = try? await offPool { process.waitUntilExit() }
    }

    /// SIGTERM, then SIGKILL if the server has not gone in 15 s (so a test never leaves one behind).
    public func terminate() async {
        let process = self.process
        kill(process.processIdentifier, SIGTERM)
        _ = try? await offPool {
            let deadline = Date().addingTimeInterval(15)
            while process.isRunning && Date() < deadline { usleep(10_000) }
            if process.isRunning { kill(process.processIdentifier, SIGKILL) }
            process.waitUntilExit()
        }
    }

    /// A workload's phase, as `canopy show -o json` says (nil if it cannot be read).
    public func phase(_ id: String) async throws -> String? {
        let show = try await cli(["show", id, "-o", "json"])
        return ((try? JSONSerialization.jsonObject(with: Data(show.stdout.utf8))) as? [String: Any])?["phase"] as? String
    }

    /// Runs the CLI against this server.
    public func cli(_ args: [String], stdin: String? = nil, token: String? = nil) async throws -> (status: Int32, stdout: String, stderr: String) {
        try await runProcess(
            buildProductsDir + "/canopy", args, env: ["CANOPY_URL": url, "CANOPY_TOKEN": token ?? self.token], stdin: stdin)
    }
}

/// A program (argv joined by U+001F: `ssh -tt ... ID@127.0.0.1`, `canopy exec -it ID -- sh`) under a
/// pseudo-terminal of 33x101 (Python's pty): types each line, resizing to 50x120 before the last; prints what the
/// terminal showed and the exit code.
public let pseudoTerminalDriver = """
    import os, pty, sys, time, select, struct, fcntl, termios, signal
    # The test process may hold signals blocked, and children inherit the mask: ssh must see SIGWINCH.
    signal.pthread_sigmask(signal.SIG_SETMASK, [])
    argv, lines = sys.argv[1].split("\\x1f"), sys.argv[2:]
    pid, fd = pty.fork()
    if pid == 0:
        fcntl.ioctl(0, termios.TIOCSWINSZ, struct.pack("HHHH", 33, 101, 0, 0))
        os.execvp(argv[0], argv)
    out = b""
    def drain(seconds):
        global out
        end = time.time() + seconds
        while time.time() < end:
            r, _, _ = select.select([fd], [], [], 0.1)
            if r:
                try: d = os.read(fd, 65536)
                except OSError: return
                if not d: return
                out += d
    drain(3)
    for i, line in enumerate(lines):
        if i == len(lines) - 1:
            fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 120, 0, 0))
            os.kill(pid, 28)
            time.sleep(0.5)
        os.write(fd, line.encode() + b"\\n")
        drain(1.5)
    drain(3)
    _, status = os.waitpid(pid, 0)
    print(out.decode(errors="replace")); print("EXIT", os.waitstatus_to_exitcode(status))
    """
