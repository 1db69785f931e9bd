import CanopyCore
import CanopyServices
import Crypto
import Foundation
import Logging
import NIOCore
import NIOPosix
import NIOSSH
import ServiceLifecycle
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// Canopy's SSH server (`canopy serve --ssh-port`): a user's stock `ssh` reaches the instances they own, with no
/// sshd in the task. The user name picks the workload (`ssh ID@host`, or `ID.TASK@host` for another task); the
/// key must be one the user registered (`canopy ssh-keys add`), and the user the workload's owner or an admin.
///
/// Each session runs through `ExecService`, as `canopy exec` does: `shell` is a login shell (bash, else sh) with
/// the terminal `pty-req` asked for, `exec` runs the command with `sh -c`, and `window-change`, end of input and
/// the exit status are passed on. `direct-tcpip` (`ssh -L`, VS Code) reaches ports of the task itself on its
/// loopback, through the runtime's connector (never another host, never another tenant's listener). Remote
/// forwarding is refused. The `sftp` subsystem runs OpenSSH's `sftp-server` where the task has one, so `scp`
/// (SFTP since OpenSSH 9), `sftp` and VS Code's uploads work.
public final class SSHGateway: Service, Sendable {
    public let host: String
    public let port: Int
    let hostKey: NIOSSHPrivateKey
    let keys: SSHKeyService
    let exec: ExecService
    let logger: Logger
    let onBound: @Sendable (Int) async -> Void
    private let connections = Mutex<[ObjectIdentifier: (channel: any Channel, login: Login, address: String)]>([:])
    /// The most connections held at once, and from one address.
    static let maxConnections = 1024
    static let maxConnectionsPerAddress = 64
    /// The most session channels one connection may have open.
    static let maxSessionsPerConnection = 16
    /// How long a connection may take to log in.
    static let loginTimeout: TimeAmount = .seconds(20)

    /// Creates the server; its host key is read from `hostKeyFile`, or made there (Ed25519, mode 0600).
    public init(
        host: String, port: Int, hostKeyFile: String, keys: SSHKeyService, exec: ExecService, logger: Logger,
        onBound: @escaping @Sendable (Int) async -> Void = { _ in }
    ) throws {
        self.host = host
        self.port = port
        self.hostKey = NIOSSHPrivateKey(ed25519Key: try Self.loadOrCreateHostKey(hostKeyFile))
        self.keys = keys
        self.exec = exec
        self.logger = logger
        self.onBound = onBound
        keys.onRemoved { [weak self] key in self?.closeConnections(of: key) }
    }

    /// The host key's public half, as an OpenSSH line (for known_hosts).
    public var publicHostKey: String { String(openSSHPublicKey: hostKey.publicKey) }

    static func loadOrCreateHostKey(_ path: String) throws -> Curve25519.Signing.PrivateKey {
        if let data = FileManager.default.contents(atPath: path) {
            return try Curve25519.Signing.PrivateKey(rawRepresentation: data)
        }
        let key = Curve25519.Signing.PrivateKey()
        let fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw CanopyError(.internal, "cannot create \(path): \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        let raw = key.rawRepresentation
        let ok = raw.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) == raw.count }
        guard ok, fsync(fd) == 0 else { throw CanopyError(.internal, "cannot write \(path)") }
        return key
    }

    public func run() async throws {
        let hostKey = hostKey
        let keys = keys
        let exec = exec
        let logger = logger
        let server = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(.backlog, value: 256)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            .childChannelInitializer { [self] channel in
                let login = Login()
                guard track(channel, login: login) else { return channel.close() }
                return channel.eventLoop.makeCompletedFuture {
                    var configuration = SSHServerConfiguration(
                        hostKeys: [hostKey], userAuthDelegate: KeyAuthentication(keys: keys, exec: exec, login: login, logger: logger))
                    configuration.maxAuthAttempts = 6
                    let handler = NIOSSHHandler(
                        role: .server(configuration), allocator: channel.allocator,
                        inboundChildChannelInitializer: { child, type in
                            Self.initialize(child, type, login: login, keys: keys, exec: exec, logger: logger)
                        })
                    // No login within a minute, or a connection silent for an hour, is closed.
                    try channel.pipeline.syncOperations.addHandlers([
                        IdleStateHandler(readTimeout: .seconds(3600)), handler, ConnectionErrors(logger: logger),
                    ])
                    channel.eventLoop.scheduleTask(in: Self.loginTimeout) {
                        if login.target == nil { channel.close(promise: nil) }
                    }
                }
            }
            .bind(host: host, port: port).get()
        let bound = server.localAddress?.port ?? port
        await onBound(bound)
        logger.info("ssh listening", metadata: ["address": "\(host):\(bound)", "hostKey": "\(publicHostKey)"])
        try await withGracefulShutdownHandler {
            try await server.closeFuture.get()
        } onGracefulShutdown: {
            server.close(promise: nil)
        }
        for entry in connections.withLock({ Array($0.values) }) { entry.channel.close(promise: nil) }
    }

    private func track(_ channel: any Channel, login: Login) -> Bool {
        let id = ObjectIdentifier(channel)
        let address = channel.remoteAddress?.ipAddress ?? "?"
        let admitted = connections.withLock { c -> Bool in
            guard c.count < Self.maxConnections, c.values.filter({ $0.address == address }).count < Self.maxConnectionsPerAddress else { return false }
            c[id] = (channel, login, address)
            return true
        }
        if admitted { channel.closeFuture.whenComplete { [self] _ in _ = connections.withLock { $0.removeValue(forKey: id) } } }
        return admitted
    }

    /// Closes the connections that logged in with `key` (it was removed, or its user was).
    func closeConnections(of key: SSHKey) {
        let gone = connections.withLock { c in
            c.values.filter { $0.login.target.map { $0.keyID == key.id && $0.principal.user == key.user && $0.principal.tenant == key.tenant } ?? false }
        }
        for entry in gone { entry.channel.close(promise: nil) }
        if !gone.isEmpty { logger.info("ssh connections closed: their key was removed", metadata: ["user": "\(key.user)", "count": "\(gone.count)"]) }
    }

    /// A new channel of an authenticated connection: a session, or a forwarded connection to the task.
    static func initialize(
        _ child: any Channel, _ type: SSHChannelType, login: Login, keys: SSHKeyService, exec: ExecService, logger: Logger
    ) -> EventLoopFuture<Void> {
        guard let target = login.target else { return child.eventLoop.makeFailedFuture(CanopyError(.unauthenticated, "not logged in")) }
        // A key removed (or its user removed) since the login opens nothing more, and its connection goes.
        guard keys.keys(blob: target.keyBlob).contains(where: { $0.user == target.principal.user && $0.tenant == target.principal.tenant }) else {
            logger.info("ssh connection closed: its key was removed", metadata: ["user": "\(target.principal.user)"])
            child.parent?.close(promise: nil)
            return child.eventLoop.makeFailedFuture(CanopyError(.unauthenticated, "the key was removed"))
        }
        switch type {
        case .session:
            let admitted = login.sessions.withLock { n -> Bool in
                guard n < SSHGateway.maxSessionsPerConnection else { return false }
                n += 1
                return true
            }
            guard admitted else {
                return child.eventLoop.makeFailedFuture(CanopyError(.quotaExceeded, "at most \(SSHGateway.maxSessionsPerConnection) sessions per connection"))
            }
            child.closeFuture.whenComplete { _ in login.sessions.withLock { $0 -= 1 } }
            return child.setOption(ChannelOptions.allowRemoteHalfClosure, value: true).flatMapThrowing {
                try child.pipeline.syncOperations.addHandler(SessionHandler(target: target, exec: exec, logger: logger))
            }
        case .directTCPIP(let request):
            // Only the instance itself: its loopback, by any of its names.
            guard ["localhost", "127.0.0.1", "::1", "0.0.0.0", "ip6-localhost"].contains(request.targetHost.lowercased()) else {
                logger.info("ssh forward refused", metadata: ["target": "\(request.targetHost):\(request.targetPort)"])
                return child.eventLoop.makeFailedFuture(CanopyError(.permissionDenied, "only the instance's own ports can be forwarded"))
            }
            let promise = child.eventLoop.makePromise(of: Void.self)
            promise.completeWithTask {
                let fd = try await exec.connect(target.principal, workloadID: target.workloadID, task: target.task, port: request.targetPort)
                try await Forwarding.start(sshChannel: child, socket: fd, onInput: { exec.noteInput(workloadID: target.workloadID) })
            }
            return promise.futureResult
        case .forwardedTCPIP:
            return child.eventLoop.makeFailedFuture(CanopyError(.permissionDenied, "remote forwarding is not offered"))
        }
    }
}

/// Who logged in on a connection, and into what.
final class Login: Sendable {
    struct Target: Sendable {
        var principal: Principal
        var workloadID: String
        var task: Int
        /// The key it logged in with (its SSH blob): checked again at every channel it opens.
        var keyBlob: Data
        var keyID: String
    }
    /// Session channels open now.
    let sessions = Mutex(0)
    private let state = Mutex<Target?>(nil)
    var target: Target? { state.withLock { $0 } }
    func set(_ t: Target) { state.withLock { $0 = t } }

    /// `ID` or `ID.TASK`.
    static func parse(_ username: String) -> (workloadID: String, task: Int)? {
        guard !username.isEmpty, username.utf8.count <= 200 else { return nil }
        let parts = username.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count <= 2, !parts[0].isEmpty, parts[0].allSatisfy({ $0.isLetter || $0.isNumber || $0 == "-" || $0 == "_" }) else { return nil }
        guard parts.count == 2 else { return (String(parts[0]), 0) }
        guard let task = Int(parts[1]), (0..<1024).contains(task) else { return nil }
        return (String(parts[0]), task)
    }
}

/// Public-key logins: a registered key, and a user who may enter the workload the user name names.
final class KeyAuthentication: NIOSSHServerUserAuthenticationDelegate, Sendable {
    let keys: SSHKeyService
    let exec: ExecService
    let login: Login
    let logger: Logger

    init(keys: SSHKeyService, exec: ExecService, login: Login, logger: Logger) {
        self.keys = keys
        self.exec = exec
        self.login = login
        self.logger = logger
    }

    var supportedAuthenticationMethods: NIOSSHAvailableUserAuthenticationMethods { .publicKey }

    func requestReceived(request: NIOSSHUserAuthenticationRequest, responsePromise: EventLoopPromise<NIOSSHUserAuthenticationOutcome>) {
        // The signature was verified by NIOSSH before this is called.
        guard case .publicKey(let offer) = request.request, let (workloadID, task) = Login.parse(request.username) else {
            return responsePromise.succeed(.failure)
        }
        let line = String(openSSHPublicKey: offer.publicKey)
        guard let blob = line.split(separator: " ").dropFirst().first.flatMap({ Data(base64Encoded: String($0)) }), case let registered = keys.keys(blob: blob),
            !registered.isEmpty
        else {
            logger.info("ssh login refused: unknown key", metadata: ["user": "\(request.username)"])
            return responsePromise.succeed(.failure)
        }
        let exec = exec
        let login = login
        let logger = logger
        responsePromise.completeWithTask {
            // The registration (users may share a key) whose user may enter the workload.
            for key in registered {
                guard let w = try? await exec.mayEnter(key.principal, workloadID: workloadID) else { continue }
                login.set(.init(principal: key.principal, workloadID: w.id, task: task, keyBlob: blob, keyID: key.id))
                logger.info("ssh login", metadata: ["user": "\(key.user)", "workload.id": "\(w.id)", "task": "\(task)", "key": "\(key.id)"])
                return .success
            }
            // Another tenant's workload and a missing one look the same: a refused login.
            logger.info("ssh login refused", metadata: ["workload.id": "\(workloadID)", "keys": "\(registered.map(\.user))"])
            return .failure
        }
    }
}

/// Logs and closes a connection whose SSH handling failed.
final class ConnectionErrors: ChannelInboundHandler, Sendable {
    typealias InboundIn = Any
    let logger: Logger
    init(logger: Logger) { self.logger = logger }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        logger.debug("ssh connection closed on error", metadata: ["error": "\(error)"])
        context.close(promise: nil)
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if event is IdleStateHandler.IdleStateEvent { context.close(promise: nil) }
        context.fireUserInboundEventTriggered(event)
    }
}
