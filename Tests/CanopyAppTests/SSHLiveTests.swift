import CanopyCore
import CanopyTesting
import Foundation
import Testing

/// Canopy's SSH server against OpenSSH's own client (`ssh`, `ssh-keygen`), through `canopy serve --ssh-port`.
@Suite("SSH into instances with the stock ssh client, live", .serialized)
struct SSHLiveTests {
    static let ready = getuid() == 0 && FileManager.default.isExecutableFile(atPath: "/usr/bin/ssh")

    @Test("ssh ID@host: keys registered through the CLI, exec with stdin and exit status, a shell with a terminal and resizes, ssh -L to the task's own port only, canopy ssh with the pinned host key, ssh-config; unknown keys, other tenants and removed users refused", .enabled(if: SSHLiveTests.ready))
    func ssh() async throws {
        let dir = try makeTempDir("canopy-ssh-keys")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        for (name, type) in [("mine", "ed25519"), ("stranger", "ed25519"), ("colleague", "ecdsa"), ("unknown", "ed25519"), ("old", "rsa")] {
            let made = try await runProcess("/usr/bin/ssh-keygen", ["-q", "-t", type, "-N", "", "-C", name, "-f", "\(dir)/\(name)"])
            #expect(made.status == 0, "\(made)")
        }
        try await ServerProcess.with(dataDir: try makeTempDir("canopy-ssh"), removeAfter: true, extra: ["--ssh-port", "0"]) { server in
            func token(_ user: String, _ tenant: String) async throws -> String {
                let made = try await server.cli(["tokens", "create", "--user", user, "--tenant", tenant])
                return made.stdout.split(separator: "\n").map { $0.trimmingCharacters(in: .whitespaces) }.first { $0.hasPrefix("cnp_") } ?? ""
            }
            let strangerToken = try await token("mallory", "other")
            let colleagueToken = try await token("carol", "default")
            // Keys: mine, the stranger's and the colleague's registered; RSA refused with what to do.
            #expect(try await server.cli(["ssh-keys", "add", "\(dir)/mine.pub"]).status == 0)
            #expect(try await server.cli(["ssh-keys", "add", "\(dir)/stranger.pub"], token: strangerToken).status == 0)
            #expect(try await server.cli(["ssh-keys", "add", "\(dir)/colleague.pub"], token: colleagueToken).status == 0)
            let rsa = try await server.cli(["ssh-keys", "add", "\(dir)/old.pub"])
            #expect(rsa.status != 0 && rsa.stderr.contains("ssh-keygen -t ed25519"), "\(rsa)")
            // Someone else registering my public key (public keys are public) neither fails nor blocks mine, nor tells
            // them it is registered; it opens nothing of mine to them (below).
            #expect(try await server.cli(["ssh-keys", "add", "\(dir)/mine.pub"], token: strangerToken).status == 0)
            // A key line whose data is cut short, or has bytes after the key, is refused.
            let stub = try await server.cli(["ssh-keys", "add", "-"], stdin: "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIA== stub\n")
            #expect(stub.status != 0 && stub.stderr.contains("publicKey"), "\(stub)")
            let listed = try await server.cli(["ssh-keys", "ls"])
            #expect(listed.stdout.contains("mine") && listed.stdout.contains("ssh-ed25519"), "\(listed)")

            let shell = try await server.cli(["shell", "--cpus", "0.5", "--memory", "256Mi"])
            let id = shell.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
            #expect(shell.status == 0, "\(shell)")
            let config = dir + "/config"
            let env = ["CANOPY_URL": server.url, "CANOPY_TOKEN": server.token, "XDG_CONFIG_HOME": config, "HOME": dir]
            let identity = ["-i", "\(dir)/mine", "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes", "-o", "LogLevel=ERROR"]

            // canopy ssh: the host key pinned from the API (StrictHostKeyChecking=yes), a command with stdin.
            let viaCanopy = try await runProcess(
                buildProductsDir + "/canopy", ["ssh", id, "--"] + identity + ["id -u; pwd; wc -l; echo to-stderr >&2; exit 4"], env: env,
                stdin: (0..<5000).map { "line \($0)\n" }.joined())
            let out = viaCanopy.stdout.split(separator: "\n").map(String.init)
            #expect(viaCanopy.status == 4, "\(viaCanopy)")
            #expect(out.count == 3 && Int(out[0]) ?? 0 > 0 && out[1].hasSuffix("/task-0/work") && out[2] == "5000", "\(viaCanopy)")
            #expect(viaCanopy.stderr.contains("to-stderr"), "\(viaCanopy)")
            let knownHosts = config + "/canopy/known_hosts"
            #expect(((try? String(contentsOfFile: knownHosts, encoding: .utf8)) ?? "").contains("ssh-ed25519"))

            // The SSH server's port, from the API.
            let info = try await pythonRequest(server.url, "GET", "/api/v1/ssh", token: server.token)
            let port = ((try? JSONSerialization.jsonObject(with: Data(info.1.utf8))) as? [String: Any])?["port"] as? Int ?? 0
            #expect(info.0 == 200 && port > 0, "\(info)")
            let base = ["-p", String(port), "-o", "UserKnownHostsFile=\(knownHosts)", "-o", "StrictHostKeyChecking=yes"]

            // scp's classic protocol (-O): scp in the task, which has a user name of its own.
            try "copied-in\n".write(toFile: dir + "/copy.txt", atomically: true, encoding: .utf8)
            let scp = try await runProcess(
                "/usr/bin/scp", ["-O", "-i", "\(dir)/mine", "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes", "-P", String(port), "-o", "UserKnownHostsFile=\(knownHosts)", dir + "/copy.txt", "\(id)@127.0.0.1:copy.txt"],
                env: ["HOME": dir])
            #expect(scp.status == 0, "\(scp)")
            #expect((try? String(contentsOfFile: server.dataDir + "/workloads/\(id)/task-0/work/copy.txt", encoding: .utf8)) == "copied-in\n")

            // scp's default protocol, SFTP: the sftp subsystem runs the task's sftp-server (test.sh installs it).
            let sftpUp = try await runProcess(
                "/usr/bin/scp", ["-i", "\(dir)/mine", "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes", "-P", String(port), "-o", "UserKnownHostsFile=\(knownHosts)", dir + "/copy.txt", "\(id)@127.0.0.1:sftp.txt"],
                env: ["HOME": dir])
            #expect(sftpUp.status == 0, "\(sftpUp)")
            #expect((try? String(contentsOfFile: server.dataDir + "/workloads/\(id)/task-0/work/sftp.txt", encoding: .utf8)) == "copied-in\n")
            let sftpDown = try await runProcess(
                "/usr/bin/scp", ["-i", "\(dir)/mine", "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes", "-P", String(port), "-o", "UserKnownHostsFile=\(knownHosts)", "\(id)@127.0.0.1:sftp.txt", dir + "/back.txt"],
                env: ["HOME": dir])
            #expect(sftpDown.status == 0 && (try? String(contentsOfFile: dir + "/back.txt", encoding: .utf8)) == "copied-in\n", "\(sftpDown)")

            // A login shell with a terminal, its size and a resize, and the shell's exit status.
            let tty = try await runProcess(
                "/usr/bin/python3",
                ["-c", pseudoTerminalDriver, (["ssh", "-tt"] + identity + base + ["\(id)@127.0.0.1"]).joined(separator: "\u{1f}"), "tty; stty size", "stty size; exit 7"],
                env: ["HOME": dir])
            #expect(tty.stdout.contains("/dev/pts/") && tty.stdout.contains("33 101") && tty.stdout.contains("50 120") && tty.stdout.contains("EXIT 7"), "\(tty)")

            // ssh -L to a port the task serves on its own loopback; another host is refused.
            let servedPort = ProxyLiveTests.freePort()
            let served = try await server.cli([
                "run", "-d", "--interactive", "--cpus", "0.5", "--memory", "256Mi", "--", "sh", "-c",
                "echo forwarded-ok > index.html; exec python3 -m http.server \(servedPort) --bind 127.0.0.1",
            ])
            let servedID = served.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
            #expect(try await eventually(timeout: .seconds(20)) { try await server.phase(servedID) == "Running" })
            let local = ProxyLiveTests.freePort()
            // In the background once logged in (ssh -f), so that no Foundation Process outlives this step.
            let forwardArgs = ["-f", "-N", "-L", "\(local):localhost:\(servedPort)", "-L", "\(local + 1):192.0.2.1:80"] + identity + base + ["\(servedID)@127.0.0.1"]
            let started = try await runProcess("/usr/bin/ssh", forwardArgs, env: ["HOME": dir])
            #expect(started.status == 0, "\(started)")
            defer {
                for pid in (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? [] {
                    guard let cmd = try? String(contentsOfFile: "/proc/\(pid)/cmdline", encoding: .utf8) else { continue }
                    if cmd.hasPrefix("/usr/bin/ssh\0-f\0-N\0-L\0\(local):"), let n = Int32(pid) { kill(n, SIGTERM) }
                }
            }
            let fetch = "import sys, urllib.request\ntry: print(urllib.request.urlopen(sys.argv[1], timeout=5).read().decode())\nexcept Exception as e: print('failed', e)"
            var page = ""
            _ = try await eventually(timeout: .seconds(15)) {
                page = try await runProcess("/usr/bin/python3", ["-c", fetch, "http://127.0.0.1:\(local)/index.html"]).stdout
                return page.contains("forwarded-ok")
            }
            #expect(page.contains("forwarded-ok"), "\(page)")
            let elsewhere = try await runProcess("/usr/bin/python3", ["-c", fetch, "http://127.0.0.1:\(local + 1)/"]).stdout
            #expect(elsewhere.contains("failed"), "\(elsewhere)")

            // Refused logins: a key nobody registered, another tenant's key, a colleague's key, a missing workload.
            func login(_ key: String, _ user: String) async throws -> (status: Int32, stdout: String, stderr: String) {
                try await runProcess(
                    "/usr/bin/ssh", ["-i", "\(dir)/\(key)", "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes"] + base + ["\(user)@127.0.0.1", "echo in"], env: ["HOME": dir])
            }
            for (key, user) in [("unknown", id), ("stranger", id), ("colleague", id), ("mine", "NoSuchWorkload")] {
                let refused = try await login(key, user)
                #expect(refused.status == 255 && refused.stderr.contains("Permission denied") && !refused.stdout.contains("in"), "\(key) \(user): \(refused)")
            }
            #expect(try await login("mine", "\(id).0").stdout == "in\n")

            // ssh-config for VS Code.
            let sshConfig = try await runProcess(buildProductsDir + "/canopy", ["ssh-config"], env: env)
            #expect(sshConfig.stdout.contains("Host canopy-\(id)") && sshConfig.stdout.contains("Port \(port)"), "\(sshConfig)")

            // A removed user's keys go with their tokens.
            #expect(try await login("stranger", "anything").status == 255)
            #expect(try await server.cli(["users", "rm", "mallory", "--tenant", "other"]).status == 0)
            let afterRemoval = try await pythonRequest(server.url, "GET", "/api/v1/ssh-keys", token: server.token)
            #expect(!afterRemoval.1.contains("mallory"), "\(afterRemoval)")
            // Removing a key closes the connections that logged in with it.
            let held = try await runProcess("/usr/bin/ssh", ["-f", "-N"] + identity + base + ["\(id)@127.0.0.1"], env: ["HOME": dir])
            #expect(held.status == 0, "\(held)")
            func holding() -> Bool {
                ((try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []).contains { pid in
                    ((try? String(contentsOfFile: "/proc/\(pid)/cmdline", encoding: .utf8)) ?? "").hasPrefix("/usr/bin/ssh\0-f\0-N\0-i\0\(dir)/mine")
                }
            }
            #expect(holding())
            let mine = try await server.cli(["ssh-keys", "ls", "-o", "json"])
            let keyID = ((try? JSONSerialization.jsonObject(with: Data(mine.stdout.utf8))) as? [[String: Any]])?.first { $0["user"] as? String == "admin" }?["id"] as? String
            #expect(try await server.cli(["ssh-keys", "rm", try #require(keyID)]).status == 0)
            #expect(try await eventually(timeout: .seconds(10)) { !holding() }, "the connection outlived its key")
            #expect(try await login("mine", id).status == 255)
            _ = try await server.cli(["stop", id, servedID])
        }
    }
}
