import CanopyCore
import CanopyTesting
import Foundation
import Testing

/// `canopy exec` against a real `canopy serve`: the CLI is the WebSocket client, the command runs in a real task.
@Suite("exec into running tasks, live", .serialized)
struct ExecLiveTests {
    static let root = getuid() == 0

    /// `canopy exec -it ID -- sh` under a pseudo-terminal of 33x101 (see `pseudoTerminalDriver`).
    static func terminal(_ id: String, _ lines: [String]) -> [String] {
        ["-c", pseudoTerminalDriver, [buildProductsDir + "/canopy", "exec", "-it", id, "--", "sh"].joined(separator: "\u{1f}")] + lines
    }

    @Test("canopy exec: as the task's user in its cgroup, directory and private /tmp; stdout, stderr, stdin and the exit code; a terminal with its size and resizes; a client that leaves ends the command; others refused", .enabled(if: ExecLiveTests.root))
    func exec() async throws {
        try await ServerProcess.with(dataDir: try makeTempDir("canopy-exec"), removeAfter: true) { server in
            let run = try await server.cli(["run", "-d", "--interactive", "--", "sh", "-c", "echo from-the-task > /tmp/marker; sleep 300"])
            #expect(run.status == 0, "\(run)")
            let id = run.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
            #expect(try await eventually(timeout: .seconds(20)) { try await server.phase(id) == "Running" })
            let task = server.dataDir + "/workloads/\(id)/task-0"
            #expect(try await eventually(timeout: .seconds(10)) { FileManager.default.fileExists(atPath: task + "/pid") })
            let taskUID = (try? FileManager.default.attributesOfItem(atPath: task + "/work")[.ownerAccountID] as? Int) ?? -1

            // What it runs as and where: the task's uid, its working directory, its /tmp, its cgroup.
            let inside = try await server.cli([
                "exec", id, "--", "sh", "-c",
                "id -u; pwd; cat /tmp/marker; echo \"name $(id -un) home $HOME\"; echo x >> /etc/passwd || echo passwd-read-only; grep -c \(id)-0 /proc/self/cgroup; echo to-stderr >&2; exit 3",
            ])
            let lines = inside.stdout.split(separator: "\n").map(String.init)
            #expect(inside.status == 3, "\(inside)")
            #expect(lines.first == String(taskUID) && taskUID > 0, "\(inside) uid \(taskUID)")
            #expect(lines.dropFirst().first == task + "/work", "\(inside)")
            #expect(lines.contains("from-the-task"), "the task's private /tmp: \(inside)")
            // The task's uid has a name and a home (a passwd entry of its own namespace), which it cannot change.
            #expect(lines.contains("name task-\(taskUID) home \(task)/work") && lines.contains("passwd-read-only"), "\(inside)")
            #expect(!((try? String(contentsOfFile: "/etc/passwd", encoding: .utf8)) ?? "").contains("task-\(taskUID)"), "the host's passwd is untouched")
            #expect(lines.last.flatMap { Int($0) } ?? 0 >= 1, "the task's cgroup: \(inside)")
            #expect(inside.stderr.contains("to-stderr"), "\(inside)")

            // Standard input, whole, and its end.
            let body = (0..<20000).map { "line \($0)" }.joined(separator: "\n")
            let piped = try await server.cli(["exec", "-i", id, "--", "sh", "-c", "wc -l; echo after-eof"], stdin: body + "\n")
            #expect(piped.status == 0 && piped.stdout.contains("20000") && piped.stdout.contains("after-eof"), "\(piped)")
            // Far more input than the command takes at once (it reads nothing for 2 s): held back, not lost or cut off.
            let big = try await server.cli(
                ["exec", "-i", id, "--", "sh", "-c", "sleep 2; cat > big.bin; wc -c < big.bin; rm big.bin"], stdin: String(repeating: "x", count: 48 << 20))
            #expect(big.status == 0 && big.stdout.trimmingCharacters(in: .whitespacesAndNewlines) == String(48 << 20), "\(big.status) \(big.stdout) \(big.stderr)")
            // Without -i the command's input is closed at once: a command that reads it ends.
            let noInput = try await server.cli(["exec", id, "--", "sh", "-c", "cat; echo input-ended"], stdin: "not sent without -i\n")
            #expect(noInput.status == 0 && noInput.stdout == "input-ended\n", "\(noInput)")
            let missing = try await server.cli(["exec", id, "--", "no-such-command"])
            #expect(missing.status == 127 && missing.stderr.contains("no-such-command"), "\(missing)")

            // A terminal: its size at start, a resize, the exit code of the shell.
            let tty = try await runProcess(
                "/usr/bin/python3", Self.terminal(id, ["tty; stty size; echo $TERM", "stty size; exit 7"]),
                env: ["CANOPY_URL": server.url, "CANOPY_TOKEN": server.token])
            #expect(tty.stdout.contains("/dev/pts/") && tty.stdout.contains("33 101") && tty.stdout.contains("xterm-256color"), "\(tty)")
            #expect(tty.stdout.contains("50 120") && tty.stdout.contains("EXIT 7"), "\(tty)")

            // A client that goes away ends its command.
            let marker = "sleep 7\(Int.random(in: 100...999))"
            let client = Process()
            client.executableURL = URL(fileURLWithPath: buildProductsDir + "/canopy")
            client.arguments = ["exec", id, "--", "sh", "-c", "exec \(marker)"]
            client.environment = ["CANOPY_URL": server.url, "CANOPY_TOKEN": server.token]
            try client.run()
            func running() -> Bool {
                ((try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []).contains { pid in
                    guard let cmd = try? String(contentsOfFile: "/proc/\(pid)/cmdline", encoding: .utf8) else { return false }
                    return cmd.replacingOccurrences(of: "\0", with: " ").hasPrefix(marker)
                }
            }
            #expect(try await eventually(timeout: .seconds(10)) { running() })
            kill(client.processIdentifier, SIGKILL)
            #expect(try await eventually(timeout: .seconds(10)) { !running() }, "the command outlived its client")

            // Others: a colleague is refused, another tenant sees nothing, no token is 401, a stopped task is a 409.
            func token(_ user: String, _ tenant: String) async throws -> String {
                let made = try await server.cli(["tokens", "create", "--user", user, "--tenant", tenant])
                return made.stdout.split(separator: "\n").map { $0.trimmingCharacters(in: .whitespaces) }.first { $0.hasPrefix("cnp_") } ?? ""
            }
            let colleague = try await server.cli(["exec", id, "--", "true"], token: try await token("carol", "default"))
            #expect(colleague.status != 0 && colleague.stderr.contains("HTTP 403"), "\(colleague)")
            let stranger = try await server.cli(["exec", id, "--", "true"], token: try await token("mallory", "other"))
            #expect(stranger.status != 0 && stranger.stderr.contains("HTTP 404"), "\(stranger)")
            let anonymous = try await server.cli(["exec", id, "--", "true"], token: "cnp_nonsense")
            #expect(anonymous.status != 0 && anonymous.stderr.contains("HTTP 401"), "\(anonymous)")
            let noTask = try await server.cli(["exec", "--task", "4", id, "--", "true"])
            #expect(noTask.status != 0 && noTask.stderr.contains("task"), "\(noTask)")
            // Without an upgrade, the path says what it wants.
            let (plain, text) = try await pythonRequest(server.url, "GET", "/api/v1/workloads/\(id)/exec?command=true", token: server.token)
            #expect(plain == 400 && text.contains("WebSocket"), "\(plain) \(text)")
            let (empty, emptyText) = try await pythonRequest(server.url, "GET", "/api/v1/workloads/\(id)/exec", token: server.token)
            #expect(empty == 400 && emptyText.contains("\"command\""), "\(empty) \(emptyText)")
            #expect(try await server.cli(["stop", id]).status == 0)
            #expect(try await eventually(timeout: .seconds(20)) { try await server.phase(id) == "Stopped" })
            let stopped = try await server.cli(["exec", id, "--", "true"])
            #expect(stopped.status != 0 && stopped.stderr.contains("HTTP 409"), "\(stopped)")

            // canopy shell: an instance that waits, entered with exec, stopped at once.
            let shell = try await server.cli(["shell", "--cpus", "0.5", "--memory", "128Mi"])
            let shellID = shell.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
            #expect(shell.status == 0 && shell.stderr.contains("canopy exec -it \(shellID)"), "\(shell)")
            #expect(try await server.phase(shellID) == "Running")
            let inShell = try await server.cli(["exec", shellID, "--", "sh", "-c", "echo in-shell"])
            #expect(inShell.status == 0 && inShell.stdout == "in-shell\n", "\(inShell)")
            let began = Date()
            #expect(try await server.cli(["stop", shellID]).status == 0)
            #expect(try await eventually(timeout: .seconds(20)) { try await server.phase(shellID) == "Stopped" })
            #expect(Date().timeIntervalSince(began) < 8, "the shell instance ends on SIGTERM, without waiting for the grace period")
        }
    }
}
