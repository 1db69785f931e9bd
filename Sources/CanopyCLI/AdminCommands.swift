import ArgumentParser
import CanopyCore
import CanopyHTTP
import Foundation

struct QueuesCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "queues", abstract: "List, create and delete queues.", subcommands: [List.self, Create.self, Remove.self], defaultSubcommand: List.self)

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "ls", abstract: "List queues with their pending and running counts.")
        @OptionGroup var format: OutputOption

        func run() async throws {
            try await client { c in
                let page = try await c.call(.GET, "/queues", as: Page<QueueView>.self)
                if format.json { return printOut(try Format.json(page.items)) }
                printOut(
                    Format.table(
                        ["NAME", "PRIORITY", "PENDING", "RUNNING", "POOL", "ROOT", "LEASE", "LEASE CAP", "IDLE STOP", "DESCRIPTION"],
                        page.items.map {
                            [
                                $0.name, String($0.priority), String($0.pending), String($0.running), $0.pool ?? "-", $0.allowRoot ? "allowed" : "-",
                                Quantity.formatDuration($0.defaultLeaseSeconds ?? Queue.builtInDefaultLease),
                                $0.maxLeaseSeconds.map(Quantity.formatDuration) ?? "none",
                                $0.idleTimeoutSeconds.map(Quantity.formatDuration) ?? "never",
                                $0.description,
                            ]
                        }))
            }
        }
    }

    struct Create: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "create", abstract: "Create or update a queue (admin).")
        @Argument(help: "Queue name.") var name: String
        @Option(help: "Queues with higher priority are served first.") var priority: Int = 0
        @Option(help: "A description.") var description: String?
        @Option(help: "The pool its workloads run in (with --executor slurm: a partition); default any.") var pool: String?
        @Flag(help: "Let containers of the queue's workloads run as root (otherwise they run as their own uid).") var allowRoot = false
        @Option(help: "The lease interactive workloads get when they ask for none, e.g. 8h (default: 12h).") var defaultLease: String?
        @Option(help: "The longest lease, from now, a workload may hold or extend to, e.g. 72h (default: no cap).") var maxLease: String?
        @Option(help: "Stop interactive workloads idle this long, e.g. 1h (default: never).") var idleTimeout: String?
        @OptionGroup var format: OutputOption

        func run() async throws {
            try await client { c in
                let q = try await c.call(
                    .POST, "/queues",
                    body: try {
                        var b = CreateQueueRequest(name: name, priority: priority, description: description, pool: pool, allowRoot: allowRoot ? true : nil)
                        if let defaultLease { b.defaultLease = DurationValue(seconds: try ResourceArguments.duration(defaultLease, option: "--default-lease")) }
                        if let maxLease { b.maxLease = DurationValue(seconds: try ResourceArguments.duration(maxLease, option: "--max-lease")) }
                        if let idleTimeout { b.idleTimeout = DurationValue(seconds: try ResourceArguments.duration(idleTimeout, option: "--idle-timeout")) }
                        return b
                    }(),
                    as: QueueView.self)
                printOut(format.json ? try Format.json(q) : q.name)
            }
        }
    }

    struct Remove: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "rm", abstract: "Delete a queue with no unfinished workloads (admin).")
        @Argument(help: "Queue name.") var name: String

        func run() async throws {
            try await client { c in
                _ = try await c.raw(.DELETE, "/queues/\(name)")
                printOut(name)
            }
        }
    }
}

struct TokensCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "tokens", abstract: "Issue, list and revoke API tokens.", subcommands: [List.self, Create.self, Remove.self], defaultSubcommand: List.self)

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "ls", abstract: "List tokens (never their secrets): your own, or every token for an admin.")
        @OptionGroup var format: OutputOption

        func run() async throws {
            try await client { c in
                let page = try await c.call(.GET, "/tokens", as: Page<TokenView>.self)
                if format.json { return printOut(try Format.json(page.items)) }
                printOut(
                    Format.table(
                        ["ID", "USER", "TENANT", "ROLE", "DESCRIPTION"], page.items.map { [$0.id, $0.user, $0.tenant, $0.role.rawValue, $0.description] }))
            }
        }
    }

    struct Create: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "create", abstract: "Issue a token for a user (admin); the secret is printed once.")
        @Option(help: "User name.") var user: String
        @Option(help: "The tenant the user belongs to (required: never the admin's by default).") var tenant: String
        @Flag(help: "Make it an admin token.") var admin = false
        @Option(help: "A description.") var description: String?
        @OptionGroup var format: OutputOption

        func run() async throws {
            try await client { c in
                let t = try await c.call(
                    .POST, "/tokens", body: CreateTokenRequest(user: user, tenant: tenant, role: admin ? .admin : .user, description: description),
                    as: TokenView.self)
                printOut(format.json ? try Format.json(t) : t.token ?? "")
            }
        }
    }

    struct Remove: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "rm", abstract: "Revoke a token: your own, or any for an admin (the last admin token cannot be revoked).")
        @Argument(help: "Token id.") var id: String

        func run() async throws {
            try await client { c in
                _ = try await c.raw(.DELETE, "/tokens/\(id)")
                printOut(id)
            }
        }
    }
}

struct UsersCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "users", abstract: "List users, give them passwords, and remove them.", subcommands: [List.self, Create.self, Passwd.self, Remove.self],
        defaultSubcommand: List.self)

    /// The password from standard input: its first line, without the line end.
    static func readPassword() throws -> String {
        guard let line = readLine(strippingNewline: true), !line.isEmpty else {
            throw ValidationError("give the password on standard input, e.g. printf '%s\\n' \"$PASSWORD\" | canopy users ...")
        }
        return line
    }

    static func checkNames(_ pairs: [(String, String)]) throws {
        // Checked here too: the names become path segments of the request.
        for (name, value) in pairs where !Queue.isValidName(value) {
            throw ValidationError("\(name) \"\(value)\": names are 1 to 63 lowercase letters, digits, '-' or '_'")
        }
    }

    struct Create: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "create",
            abstract: "Create a user who signs in with a password (admin), as SCNet clients do for their tokens.",
            discussion: "The password is read from standard input (--password-stdin) and kept only as a slow salted hash (scrypt).")
        @Argument(help: "User name.") var user: String
        @Option(help: "Their tenant.") var tenant: String
        @Flag(help: "An admin.") var admin = false
        @Flag(name: .customLong("password-stdin"), help: "Read the password from standard input (required).") var passwordStdin = false
        @OptionGroup var format: OutputOption

        func run() async throws {
            guard passwordStdin else { throw ValidationError("pass --password-stdin and the password on standard input (never on the command line)") }
            try UsersCommand.checkNames([("user", user), ("--tenant", tenant)])
            let password = try UsersCommand.readPassword()
            try await client { c in
                let v = try await c.call(
                    .POST, "/users", body: CreateUserRequest(user: user, tenant: tenant, role: admin ? .admin : .user, password: password), as: UserView.self)
                printOut(format.json ? try Format.json(v) : "\(v.user) (\(v.tenant))")
            }
        }
    }

    struct Passwd: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "passwd", abstract: "Set a user's password: an admin anyone's, a user their own. Read from standard input.",
            discussion: """
                A user changing their own gives --current-password-stdin too: standard input is then the current password \
                on its first line and the new one on its second.
                """)
        @Argument(help: "User name.") var user: String
        @Option(help: "Their tenant.") var tenant: String
        @Flag(name: .customLong("password-stdin"), help: "Read the new password from standard input (required).") var passwordStdin = false
        @Flag(name: .customLong("current-password-stdin"), help: "Read the current password first, on its own line (a user changing their own).")
        var currentPasswordStdin = false

        func run() async throws {
            guard passwordStdin else { throw ValidationError("pass --password-stdin and the password on standard input (never on the command line)") }
            try UsersCommand.checkNames([("user", user), ("--tenant", tenant)])
            let current = currentPasswordStdin ? try UsersCommand.readPassword() : nil
            let password = try UsersCommand.readPassword()
            try await client { c in
                _ = try await c.raw(.PUT, "/users/\(tenant)/\(user)/password", body: SetPasswordRequest(password: password, currentPassword: current))
                printOut("password changed for \(user) (\(tenant))")
            }
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "ls", abstract: "List every user who holds a token, an access key or a password (admin).")
        @OptionGroup var format: OutputOption

        func run() async throws {
            try await client { c in
                let page = try await c.call(.GET, "/users", as: Page<UserView>.self)
                if format.json { return printOut(try Format.json(page.items)) }
                printOut(
                    Format.table(
                        ["TENANT", "USER", "ROLES", "TOKENS", "KEYS", "PASSWORD"],
                        page.items.map {
                            [
                                $0.tenant, $0.user, $0.roles.map(\.rawValue).joined(separator: ","), String($0.tokens), String($0.keys),
                                $0.password ? "yes" : "no",
                            ]
                        }))
            }
        }
    }

    struct Remove: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "rm",
            abstract: "Remove a user: every token and access key they hold is revoked at once. Their workloads are left alone.")
        @Argument(help: "User name.") var user: String
        @Option(help: "Their tenant.") var tenant: String
        @OptionGroup var format: OutputOption

        func run() async throws {
            try UsersCommand.checkNames([("user", user), ("--tenant", tenant)])
            try await client { c in
                let r = try await c.call(.DELETE, "/users/\(tenant)/\(user)", as: UserRemoval.self)
                printOut(format.json ? try Format.json(r) : "\(r.user) (\(r.tenant)): \(r.tokensRevoked) token(s), \(r.keysRevoked) access key(s) revoked")
            }
        }
    }
}

struct TenantsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "tenants", abstract: "List tenants and their organisation ids (SCNet's orgId).", subcommands: [List.self], defaultSubcommand: List.self)

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "ls", abstract: "Tenants with users (an admin: all; a user: their own), and their ids.")
        @OptionGroup var format: OutputOption

        func run() async throws {
            try await client { c in
                let page = try await c.call(.GET, "/tenants", as: Page<TenantView>.self)
                if format.json { return printOut(try Format.json(page.items)) }
                printOut(Format.table(["TENANT", "ORG ID"], page.items.map { [$0.name, $0.id] }))
            }
        }
    }
}
