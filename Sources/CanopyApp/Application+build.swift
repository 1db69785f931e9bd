import CanopyCore
import CanopyDataForest
import CanopyDocker
import CanopyHTTP
import CanopyHost
import CanopyLocal
import CanopyProxy
import CanopySCNet
import CanopySQLite
import CanopySSH
import CanopyServices
import Foundation
import Hummingbird
import HummingbirdWebSocket
import Logging
import ServiceLifecycle
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// What `buildApplication` assembled, for callers that need more than the application (tests, the benchmark).
public struct CanopyServer: Sendable {
    /// The HTTP application, with the controller among its services.
    public var application: Application<RouterResponder<CanopyRequestContext>>
    /// The admin token, when this start generated it (printed once by `canopy serve`).
    public var generatedAdminToken: String?
    /// The admin token in force (generated, from CANOPY_ADMIN_TOKEN, or read from the data dir).
    public var adminToken: String
    /// The services, for tests.
    public var workloads: WorkloadService
    /// The controller.
    public var controller: WorkloadController
    /// The store.
    public var store: SQLiteStore
    /// The image catalog.
    public var images: ImageService
    /// Notices about what this machine cannot do (no cgroups, ...).
    public var limitations: [String]
    /// Access to tasks' ports: the proxy's URL once bound, login links.
    public var endpoints: EndpointService
}

extension CanopyServer {
    /// Serves until SIGTERM or SIGINT, then shuts down gracefully: new connections are refused, requests in flight
    /// finish (log followers end their streams). Whatever a client still holds open after `grace` seconds (a stalled
    /// upload, a connection that never reads) is cancelled, so the server always stops.
    public func runUntilSignalled(grace: Double, logger: Logger) async throws {
        var configuration = ServiceGroupConfiguration(services: [application], gracefulShutdownSignals: [.sigterm, .sigint], logger: logger)
        configuration.maximumGracefulShutdownDuration = .milliseconds(Int64(max(grace, 1) * 1000))
        configuration.maximumCancellationDuration = .seconds(5)
        try await ServiceGroup(configuration: configuration).run()
    }
}

/// Builds the whole server from its configuration: store, executor, services, routes. Shared by `canopy serve` and the tests.
/// `imageEngine`: the container engine images are kept in (nil: this server has none).
public func buildApplication(
    _ config: ServerConfiguration, logger: Logger = Logger(label: "canopy"), imageEngine: (any ImageEngine)? = nil,
    onServerRunning: @escaping @Sendable (Int) async -> Void = { _ in }
) async throws -> CanopyServer {
    let dataDir = config.absoluteDataDir
    let fm = FileManager.default
    try fm.createDirectory(atPath: dataDir, withIntermediateDirectories: true)
    // Private to the server: nothing in it can be listed by anyone else, and every file in it is 0600. It stays
    // traversable (0711) because a task reaches its own working directory, workloads/ID/task-N/work (0700, the
    // task's), by its full path. The data store (data/) is 0700: tasks get their tenant's data only by staging.
    chmod(dataDir, 0o711)
    try DataDirLock.acquire(dataDir)

    let databasePath = dataDir + "/canopy.sqlite"
    // SQLite creates the WAL and shared-memory files with the database's own mode.
    for file in [databasePath, databasePath + "-wal", databasePath + "-shm"] {
        let fd = open(file, file == databasePath ? O_RDWR | O_CREAT | O_CLOEXEC : O_RDWR | O_CLOEXEC, 0o600)
        if fd >= 0 {
            fchmod(fd, 0o600)
            close(fd)
        }
    }
    let store = try SQLiteStore(path: databasePath)
    // The container engine, when there is one: its containers run the workloads that name an image, beside the
    // process runtime and on the host's one inventory (and so its one GPU ledger).
    let engine = try config.containerEngineSocket().map { DockerEngine(socketPath: $0) }
    let network = try config.checkedContainerNetwork()
    let taskUIDs = try TaskIdentities.parseRange(config.taskUIDs)
    let runtimes = try config.makeRuntimes(logger: logger) { _ in
        guard let engine else { return [] }
        let identities = geteuid() == 0 ? try TaskIdentities(range: taskUIDs) : nil
        return [
            ContainerRuntime(
                engine: engine, configuration: .init(workloadsRoot: dataDir + "/workloads", network: network), identities: identities,
                logger: logger)
        ]
    }
    let imageEngine = imageEngine ?? engine.map { DockerImages(engine: $0) }
    for note in runtimes.limitations { logger.notice("\(note)") }
    let dataStore = try LocalDataStore(root: dataDir + "/data")
    chmod(dataDir + "/data", 0o700)
    // A backend that runs images without an engine on its nodes (Slurm) gets their root file systems unpacked in the
    // data dir, which its nodes share; images/ is then traversable (0711) by the jobs, its spool/ stays private.
    var imageFilesystems: ImageFilesystems?
    if runtimes.delegates, let imageEngine {
        try fm.createDirectory(atPath: dataDir + "/images", withIntermediateDirectories: true)
        chmod(dataDir + "/images", 0o711)
        imageFilesystems = try ImageFilesystems(root: dataDir + "/images/fs", engine: imageEngine)
        await imageFilesystems?.removeLeftovers()
    }
    let proxyDomain = try config.checkedProxyDomain()
    let apps = try AppService(keyFile: dataDir + "/app.key", configured: try config.loadedApps(), hostMode: proxyDomain != nil)
    let controller = WorkloadController(
        store: store, runtimes: runtimes, dataStore: dataStore, stopGrace: config.stopGrace, imageFilesystems: imageFilesystems, apps: apps, logger: logger)
    try await controller.recover()
    let auth = AuthService(store: store)
    try await auth.load()
    let (adminToken, generated) = try await AdminCredential.ensure(auth: auth, dataDir: dataDir, fromEnvironment: config.adminToken)
    let keys = try AccessKeyService(store: store, keyFile: dataDir + "/secret.key")
    try await keys.load()
    // Images and mounts: the catalog, and what workloads with images or mounts get.
    let images = ImageService(store: store, engine: imageEngine, spoolDirectory: dataDir + "/images/spool", pullRegistries: config.pullRegistries)
    let workloads = WorkloadService(
        store: store, controller: controller, runtimes: runtimes, images: images, imagePolicy: try config.resolvedImagePolicy(hasEngine: imageEngine != nil),
        hostMountAllowList: try config.checkedHostMounts(), dataStore: dataStore, apps: apps)
    let data = DataService(store: dataStore)
    let endpoints = EndpointService(workloads: workloads, auth: auth, runtimes: runtimes, apps: apps, domain: proxyDomain)
    endpoints.onActivity { id in Task { await controller.recordActivity(id, source: "proxy") } }
    var services: [any Service] = [controller]
    if let proxyPort = try config.resolvedProxyPort() {
        let publicURL = try config.checkedProxyURL()
        let host = config.host.contains(":") ? "[\(config.host)]" : config.host
        services.append(
            ProxyServer(host: config.host, port: proxyPort, endpoints: endpoints, logger: logger) { port in
                endpoints.setBaseURL(publicURL ?? "http://\(host):\(port)")
            })
    }

    let exec = ExecService(workloads: workloads, runtimes: runtimes) { id in Task { await controller.recordActivity(id, source: "exec") } }
    let sshKeys = SSHKeyService(store: store)
    try await sshKeys.load()
    let sshServer = SSHServerInfo()
    if let sshPort = try config.resolvedSSHPort() {
        let gateway = try SSHGateway(
            host: config.host, port: sshPort, hostKeyFile: dataDir + "/ssh_host_ed25519_key", keys: sshKeys, exec: exec, logger: logger
        ) { port in sshServer.set(port: port) }
        sshServer.set(hostKey: gateway.publicHostKey)
        services.append(gateway)
    }

    let passwords = PasswordService(store: store)
    try await passwords.load()
    let router = Router(context: CanopyRequestContext.self)
    let execSocket = ExecSocket(auth: auth, exec: exec)
    NativeAPI(
        workloads: workloads, controller: controller, auth: auth, keys: keys, data: data, images: images, endpoints: endpoints, apps: apps, exec: exec,
        sshKeys: sshKeys, sshServer: sshServer, passwords: passwords
    )
    .register(on: router)
    DataForestAPI(
        workloads: workloads, records: DialectRecords(store: store, dialect: "dataforest"), keys: keys, auth: auth, data: data,
        configuration: config.dataForest, logger: logger
    ).register(on: router)
    try SCNetAPI(
        workloads: workloads, controller: controller, auth: auth, keys: keys, passwords: passwords, images: images,
        apps: apps, endpoints: endpoints, exec: exec, sshServer: sshServer, keyFile: dataDir + "/scnet.key", configuration: config.scnet, logger: logger
    ).register(on: router)
    let address = "http://\(config.host.contains(":") ? "[\(config.host)]" : config.host)"
    let app = Application(
        router: router,
        // HTTP/1.1, where GET /api/v1/workloads/ID/exec may become a WebSocket (see ExecSocket).
        server: .http1WebSocketUpgrade(configuration: .init(ws: .init(maxFrameSize: 1 << 20))) { head, _, logger in
            await execSocket.shouldUpgrade(head, logger: logger)
        },
        configuration: .init(address: .hostname(config.host, port: config.port), serverName: "canopy"),
        services: services,
        onServerRunning: { channel in
            let port = channel.localAddress?.port ?? config.port
            try? "\(address):\(port)\n".write(toFile: dataDir + "/url", atomically: true, encoding: .utf8)
            await onServerRunning(port)
        },
        logger: logger)
    return CanopyServer(
        application: app, generatedAdminToken: generated, adminToken: adminToken, workloads: workloads, controller: controller, store: store,
        images: images, limitations: runtimes.limitations, endpoints: endpoints)
}

/// The admin credential: `CANOPY_ADMIN_TOKEN` if set, otherwise generated on first start; kept in the data dir (mode 0600)
/// so the CLI on the same machine finds it.
enum AdminCredential {
    static func ensure(auth: AuthService, dataDir: String, fromEnvironment: String?) async throws -> (token: String, generated: String?) {
        let file = dataDir + "/admin.token"
        let admin = Principal(user: "admin", tenant: "default", role: .admin)
        if let token = fromEnvironment {
            if !auth.knows(token) { _ = try await auth.issue(for: admin, description: "CANOPY_ADMIN_TOKEN", token: token) }
            try write(token, to: file)
            return (token, nil)
        }
        if let existing = try? String(contentsOfFile: file, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines), auth.knows(existing) {
            return (existing, nil)
        }
        let (_, token) = try await auth.issue(for: admin, description: "generated at first start")
        try write(token, to: file)
        return (token, token)
    }

    static func write(_ token: String, to file: String) throws {
        let fd = open(file, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw CanopyError(.internal, "cannot write \(file)") }
        fchmod(fd, 0o600)
        _ = (token + "\n").withCString { Glibc.write(fd, $0, strlen($0)) }
        close(fd)
    }
}

/// One server per data directory: an advisory lock held for the life of the process.
enum DataDirLock {
    private static let held = Mutex<Set<String>>([])

    static func acquire(_ dataDir: String) throws {
        // A restart inside the same process (tests) keeps the lock it already holds.
        guard held.withLock({ $0.insert(dataDir).inserted }) else { return }
        let fd = open(dataDir + "/lock", O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw CanopyError(.internal, "cannot open \(dataDir)/lock") }
        if flock(fd, LOCK_EX | LOCK_NB) != 0 {
            close(fd)
            held.withLock { _ = $0.remove(dataDir) }
            throw CanopyError(.conflict, "another canopy server is using \(dataDir)")
        }
        // Deliberately left open: the lock lasts as long as the process.
    }
}
