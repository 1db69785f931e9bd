import ArgumentParser
import CanopyCore
import CanopyHTTP
import Foundation

#if canImport(Glibc)
import Glibc
#endif

struct SSHKeysCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ssh-keys", abstract: "Your SSH public keys, by which Canopy's SSH server knows you.",
        discussion: "Ed25519 and ECDSA keys (ssh-keygen -t ed25519); RSA keys are not supported by the server.",
        subcommands: [List.self, Add.self, Remove.self], defaultSubcommand: List.self)

    struct View: Codable {
        var id: String
        var fingerprint: String
        var user: String
        var tenant: String
        var type: String
        var name: String
        var createdAt: Date
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "ls", abstract: "List your keys (an admin: everyone's).")
        @OptionGroup var format: OutputOption

        func run() async throws {
            try await client { c in
                let page = try await c.call(.GET, "/ssh-keys", as: Page<View>.self)
                if format.json { return printOut(try Format.json(page.items)) }
                printOut(
                    Format.table(
                        ["ID", "TYPE", "NAME", "USER", "ADDED"],
                        page.items.map { [$0.id, $0.type, $0.name, "\($0.user)@\($0.tenant)", Format.timestamp($0.createdAt)] }))
            }
        }
    }

    struct Add: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "add", abstract: "Register a public key (an OpenSSH .pub file, or - for standard input).")
        @Argument(help: "The public key file, e.g. ~/.ssh/id_ed25519.pub.") var file: String
        @Option(help: "A name for it (default: the key's comment).") var name: String?

        func readKey() throws -> String {
            if file == "-" { return String(decoding: FileHandle.standardInput.readDataToEndOfFile(), as: UTF8.self) }
            guard let data = FileManager.default.contents(atPath: file) else { throw CLIError("cannot read \(file)") }
            if String(decoding: data.prefix(64), as: UTF8.self).contains("PRIVATE KEY") {
                throw CLIError("\(file) is a private key; add its public half (\(file).pub)")
            }
            return String(decoding: data, as: UTF8.self)
        }

        func run() async throws {
            struct Body: Encodable {
                var publicKey: String
                var name: String?
            }
            try await client { c in
                let text = try readKey()
                let key = try await c.call(.POST, "/ssh-keys", body: Body(publicKey: text.trimmingCharacters(in: .whitespacesAndNewlines), name: name), as: View.self)
                printOut(key.id)
            }
        }
    }

    struct Remove: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "rm", abstract: "Remove keys by id (or fingerprint).")
        @Argument(help: "The keys.") var ids: [String]

        func run() async throws {
            try await client { c in
                for id in ids {
                    let escaped = id.replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_")
                    _ = try await c.raw(.DELETE, "/ssh-keys/\(escaped)")
                }
            }
        }
    }
}

/// Where the SSH server is, and a known_hosts file that trusts its host key (learnt over the API).
struct SSHServer: Decodable {
    var port: Int
    var hostKey: String

    static func fetch(_ c: CanopyClient) async throws -> (server: SSHServer, host: String, knownHosts: String) {
        let server = try await c.call(.GET, "/ssh", as: SSHServer.self)
        let host = URL(string: c.baseURL)?.host ?? "127.0.0.1"
        let config = ProcessInfo.processInfo.environment["XDG_CONFIG_HOME"].flatMap { $0.isEmpty ? nil : $0 } ?? (NSHomeDirectory() + "/.config")
        let dir = config + "/canopy"
        try? FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let file = dir + "/known_hosts"
        let entry = "[\(host)]:\(server.port) \(server.hostKey)"
        let existing = (try? String(contentsOfFile: file, encoding: .utf8)) ?? ""
        // Replaces what this file said of the same address (a server's new key, learnt over the API).
        let kept = existing.split(separator: "\n").filter { !$0.hasPrefix("[\(host)]:\(server.port) ") }.map(String.init)
        try (kept + [entry]).joined(separator: "\n").appending("\n").write(toFile: file, atomically: true, encoding: .utf8)
        return (server, host, file)
    }
}

struct SSHCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ssh", abstract: "SSH into a running instance with your stock ssh client.",
        usage: "canopy ssh [--task N] ID [-- SSH-OPTIONS-OR-COMMAND...]",
        discussion: """
            Runs ssh -p PORT ID@HOST against Canopy's SSH server, with its host key (learnt over the API) in \
            ~/.config/canopy/known_hosts. Your key must be registered first (canopy ssh-keys add ~/.ssh/id_ed25519.pub). \
            Anything after -- goes to ssh: a command (canopy ssh ID -- nvidia-smi), or options (-- -L 8888:localhost:8888).
            """)

    @Option(help: "The task.") var task: Int = 0
    @Argument(help: "The workload.") var id: String
    @Argument(parsing: .captureForPassthrough, help: "Options or a command for ssh.") var rest: [String] = []

    func run() async throws {
        var args = rest
        if args.first == "--" { args.removeFirst() }
        var argv: [String] = []
        try await client { c in
            let (server, host, knownHosts) = try await SSHServer.fetch(c)
            let user = task == 0 ? id : "\(id).\(task)"
            argv = ["ssh", "-p", String(server.port), "-o", "UserKnownHostsFile=\(knownHosts)", "-o", "StrictHostKeyChecking=yes", "\(user)@\(host)"] + args
        }
        // ssh takes over this process (and its terminal).
        var cArgs = argv.map { strdup($0) } + [nil]
        execvp("ssh", &cArgs)
        throw CLIError("cannot run ssh: \(String(cString: strerror(errno))) (install OpenSSH's client)")
    }
}

struct SSHConfigCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ssh-config", abstract: "Print ssh_config Host entries for your instances (for VS Code Remote-SSH).",
        discussion: """
            Append the output to ~/.ssh/config: "canopy" reaches the SSH server (ssh ID@canopy), and each running \
            interactive workload of yours (or those named) gets "canopy-ID". VS Code's Remote-SSH then lists them.
            """)

    @Argument(help: "Workloads (default: your running interactive ones).") var ids: [String] = []

    func run() async throws {
        try await client { c in
            let (server, host, knownHosts) = try await SSHServer.fetch(c)
            var ids = self.ids
            if ids.isEmpty {
                let me = try await c.call(.GET, "/whoami", as: Principal.self)
                let running = try await c.call(.GET, "/workloads?phase=Running&limit=1000", as: Page<Workload>.self).items
                ids = running.filter { $0.spec.kind == .interactive && $0.owner == me.user }.map(\.id)
            }
            func entry(_ name: String, user: String?) -> String {
                var lines = ["Host \(name)", "  HostName \(host)", "  Port \(server.port)"]
                if let user { lines.append("  User \(user)") }
                lines += ["  UserKnownHostsFile \(knownHosts)", "  StrictHostKeyChecking yes", ""]
                return lines.joined(separator: "\n")
            }
            printOut(entry("canopy", user: nil))
            for id in ids { printOut(entry("canopy-\(id)", user: id)) }
        }
    }
}
