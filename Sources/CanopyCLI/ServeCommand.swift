import ArgumentParser
import CanopyApp
import CanopyCore
import Foundation
import Logging

struct ServeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "serve", abstract: "Run the Canopy server.",
        discussion: "Every option can also be set in the environment (CANOPY_DATA_DIR, CANOPY_HOST, CANOPY_PORT, CANOPY_GPUS, ...); the option wins.")

    @Option(help: "Data directory: database, logs, task directories, credentials (default: ./.canopy).") var dataDir: String?
    @Option(help: "Address to listen on (default: 127.0.0.1).") var host: String?
    @Option(help: "Port to listen on (default: 7420; 0 picks a free one).") var port: Int?
    @Option(help: "Declare GPUs on a machine without them, MODEL:COUNT[,MODEL:COUNT] (default: ask nvidia-smi).") var gpus: String?
    @Option(help: "Allocatable CPUs of this node (default: all online CPUs).") var cpus: String?
    @Option(help: "Allocatable memory of this node, e.g. 16Gi (default: all of it).") var memory: String?
    @Option(help: "With --executor slurm and the server running as root: the user jobs run as (default: nobody).") var taskUser: String?
    @Option(
        help: """
            With --executor slurm and the server running as root: the cluster account one tenant's jobs run as, TENANT=USER (repeatable); \
            tenants not listed run as --task-user, and share it.
            """)
    var slurmTenantUser: [String] = []
    @Option(help: "With the local executor and the server running as root: uids given to running tasks, one each, LOW-HIGH (default: 61184-65519).")
    var taskUids: String?
    @Option(help: "Seconds between SIGTERM and SIGKILL when stopping a task (default: 10).") var stopGrace: Double?
    @Option(help: "Where workloads run: local (processes on this machine) or slurm (jobs of this machine's Slurm cluster).") var executor: String?
    @Option(help: "With --executor slurm: seconds between two looks at Slurm's jobs and nodes (default: 2).") var slurmPollInterval: Double?
    @Option(help: "With --executor slurm: the cluster's slurm.conf (default: what the Slurm commands find, SLURM_CONF or /etc/slurm).") var slurmConf: String?
    @Option(
        help: """
            What a workload that names an image gets: engine (a container of the catalog's image), processes (host processes, the image \
            ignored) or refuse (default: engine with a container engine, refuse without).
            """)
    var imagePolicy: String?
    @Option(
        help: """
            The container engine for image workloads: unix:///path/docker.sock, or none (default: /var/run/docker.sock, then \
            podman's socket, if present).
            """)
    var containerEngine: String?
    @Option(help: "The network containers join: none, bridge (or another engine network), or host (default: the engine's default, bridge where it has one).")
    var containerNetwork: String?
    @Option(help: "A registry users may pull images from (repeatable; default docker.io; admins pull from any).") var pullRegistry: [String] = []
    @Option(help: "A host path workloads may mount as host:/PATH, it or below it (repeatable; default none).") var hostMount: [String] = []
    @Option(help: "Port of the proxy that serves tasks' HTTP ports, a separate origin from the API (default: the API's port + 1; off: no proxy).")
    var proxyPort: String?
    @Option(help: "The URL users reach the proxy at, when not http://HOST:PROXY-PORT (e.g. behind TLS: https://apps.example.com).") var proxyURL: String?
    @Option(help: "A wildcard domain reaching the proxy (*.apps.example.com): each instance gets a host name, an origin, of its own.")
    var proxyDomain: String?
    @Option(help: "Port of the SSH server: users' ssh ID@HOST into their instances, by their registered keys (default: off).")
    var sshPort: String?
    @Option(help: "A JSON file of apps workloads may run by name (canopy run --app NAME), beside the built-in jupyter.") var apps: String?
    @Option(help: "Log level: trace, debug, info, notice, warning, error.") var logLevel: String = "info"

    func validate() throws {
        // The same reading of sizes as `canopy run --memory`: `16g` is refused with a suggestion.
        if let memory { _ = try ResourceArguments.memory(memory) }
    }

    func run() async throws {
        var config = ServerConfiguration()
        if let dataDir { config.dataDir = dataDir }
        if let host { config.host = host }
        if let port { config.port = port }
        if let gpus { config.gpus = gpus }
        if let cpus { config.cpus = cpus }
        if let memory { config.memory = memory }
        if let taskUser { config.taskUser = taskUser }
        if !slurmTenantUser.isEmpty { config.slurmTenantUsers = slurmTenantUser }
        if let taskUids { config.taskUIDs = taskUids }
        if let stopGrace { config.stopGrace = stopGrace }
        if let executor { config.executor = executor }
        if let slurmPollInterval { config.slurmPollInterval = slurmPollInterval }
        if let slurmConf { config.slurmConf = slurmConf }
        if let imagePolicy { config.imagePolicy = imagePolicy }
        if let containerEngine { config.containerEngine = containerEngine }
        if let containerNetwork { config.containerNetwork = containerNetwork }
        if !pullRegistry.isEmpty { config.pullRegistries = pullRegistry }
        if !hostMount.isEmpty { config.hostMounts = hostMount }
        if let proxyPort {
            guard proxyPort == "off" || Int(proxyPort) != nil else { throw ValidationError("--proxy-port must be a port number or off") }
            config.proxyPort = proxyPort == "off" ? -1 : Int(proxyPort)
        }
        if let proxyURL { config.proxyURL = proxyURL }
        if let apps { config.appsFile = apps }
        if let proxyDomain { config.proxyDomain = proxyDomain }
        if let sshPort {
            guard sshPort == "off" || Int(sshPort) != nil else { throw ValidationError("--ssh-port must be a port number or off") }
            config.sshPort = sshPort == "off" ? nil : Int(sshPort)
        }
        let level = Logger.Level(rawValue: logLevel) ?? .info
        LoggingSystem.bootstrap { label in
            var h = StreamLogHandler.standardError(label: label)
            h.logLevel = level
            return h
        }
        let logger = Logger(label: "canopy")
        // Everything the server creates (database, logs, credentials) is private to it unless it says otherwise;
        // tasks get the usual 022 back from the shim.
        umask(0o077)
        let (host, dir) = (config.host, config.absoluteDataDir)
        let server: CanopyServer
        do {
            server = try await buildApplication(config, logger: logger) { port in
                logger.notice("Canopy is serving", metadata: ["url": "http://\(host):\(port)", "data-dir": "\(dir)", "version": "\(CanopyVersion.current)"])
            }
        } catch let e as CanopyError {
            FileHandle.standardError.write(Data("canopy: \(e.message)\(e.field.map { " (\($0))" } ?? "")\n".utf8))
            throw ExitCode(1)
        }
        if let token = server.generatedAdminToken {
            FileHandle.standardOutput.write(
                Data("Admin token (shown once; also saved in \(dir)/admin.token, mode 0600):\n  \(token)\n".utf8))
        }
        try await server.runUntilSignalled(grace: config.stopGrace, logger: logger)
    }
}
