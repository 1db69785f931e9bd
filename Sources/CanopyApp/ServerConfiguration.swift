import CanopyCore
import CanopyDataForest
import CanopyDocker
import CanopyHost
import CanopyLocal
import CanopySCNet
import CanopyServices
import CanopySlurm
import Foundation
import Logging

/// Everything `canopy serve` can be told. Each key is read from the command line first, then from the
/// environment (`CANOPY_*`), then takes its default; the README lists them all.
public struct ServerConfiguration: Sendable {
    /// `--data-dir`, `CANOPY_DATA_DIR`: database, logs, task directories, credentials. Default `./.canopy`.
    public var dataDir: String = ".canopy"
    /// `--host`, `CANOPY_HOST`. Default 127.0.0.1.
    public var host: String = "127.0.0.1"
    /// `--port`, `CANOPY_PORT`. Default 7420; 0 picks a free port.
    public var port: Int = ServerConfiguration.defaultPort
    /// `--gpus MODEL:COUNT[,MODEL:COUNT]`, `CANOPY_GPUS`: a declared GPU inventory; without it nvidia-smi is asked.
    public var gpus: String?
    /// `--cpus`, `CANOPY_CPUS`: allocatable CPUs of the local node (default: all online).
    public var cpus: String?
    /// `--memory`, `CANOPY_MEMORY`: allocatable memory of the local node (default: all of it).
    public var memory: String?
    /// `--task-user`, `CANOPY_TASK_USER`: with the Slurm executor, who jobs run as when the server is root. Default `nobody`.
    public var taskUser: String = "nobody"
    /// `--slurm-tenant-user TENANT=USER` (repeatable), `CANOPY_SLURM_TENANT_USERS` (comma-separated): with the Slurm
    /// executor, the cluster account each tenant's jobs run as, so that one tenant's jobs cannot read or change
    /// another's files; tenants not listed run as `taskUser`.
    public var slurmTenantUsers: [String] = []
    /// `--task-uids LOW-HIGH`, `CANOPY_TASK_UIDS`: with the local executor and the server running as root, the uids
    /// handed to running tasks, one each. Default 61184-65519 (systemd's dynamic-user range).
    public var taskUIDs: String = "61184-65519"
    /// `--stop-grace`, `CANOPY_STOP_GRACE`: seconds between SIGTERM and SIGKILL. Default 10.
    public var stopGrace: Double = 10
    /// `CANOPY_ADMIN_TOKEN`: the admin credential to use instead of a generated one.
    public var adminToken: String?
    /// `CANOPY_SHIM`: the canopy-shim binary (default: next to the running executable).
    public var shimPath: String?
    /// `CANOPY_CGROUP_ROOT`: where cgroups are mounted. Default /sys/fs/cgroup.
    public var cgroupRoot: String = "/sys/fs/cgroup"

    /// `--executor`, `CANOPY_EXECUTOR`: `local` (processes on this machine, the default) or `slurm` (jobs of the
    /// cluster this machine's Slurm commands reach; `SLURM_CONF` in the environment chooses another cluster).
    public var executor: String = "local"
    /// `--slurm-poll-interval`, `CANOPY_SLURM_POLL_INTERVAL`: seconds between two looks at Slurm's jobs. Default 2.
    public var slurmPollInterval: Double = 2
    /// `--slurm-conf`, `CANOPY_SLURM_CONF`: the slurm.conf of the cluster to use (default: what the Slurm commands
    /// find themselves: `SLURM_CONF`, then /etc/slurm/slurm.conf or the controller's configless answer).
    public var slurmConf: String?

    // Images and mounts.
    /// `--container-engine`, `CANOPY_CONTAINER_ENGINE`: the Docker-compatible engine that runs image workloads,
    /// `unix:///path/docker.sock`, or `none`. Default: `/var/run/docker.sock`, then podman's socket, if present.
    public var containerEngine: String?
    /// `--container-network`, `CANOPY_CONTAINER_NETWORK`: the network containers join: `none` (loopback only),
    /// `bridge` or another engine network by name, or `host` (the host's own network; an admin's explicit choice).
    /// Default: the engine's default network (Docker's `bridge` where it has one).
    public var containerNetwork: String?
    /// `--pull-registry HOST` (repeatable), `CANOPY_PULL_REGISTRIES` (comma-separated): the registries users may pull
    /// images from (admins pull from any). Default `docker.io`.
    public var pullRegistries: [String] = ["docker.io"]
    /// `--image-policy`, `CANOPY_IMAGE_POLICY`: what a workload that names an image gets: `engine` (run it as a
    /// container of the catalog's image), `processes` (run it as host processes, ignoring the image) or `refuse`.
    /// Default: `engine` when the server has a container engine, `refuse` otherwise.
    public var imagePolicy: String?
    /// `--host-mount PATH` (repeatable), `CANOPY_HOST_MOUNTS` (comma-separated): host paths workloads may mount
    /// (`host:/PATH` below one of them). Default none.
    public var hostMounts: [String] = []

    /// `--proxy-port`, `CANOPY_PROXY_PORT`: the port of the proxy listener that serves tasks' HTTP ports
    /// (`/proxy/ID/TASK/PORT/`), on `host`, never on the API's own port (origin). Default: the API's port + 1
    /// (7421), or a free one when the API's is 0; `off` (-1) turns the proxy off.
    public var proxyPort: Int?
    /// `--proxy-url`, `CANOPY_PROXY_URL`: the URL users reach the proxy at, where that is not `http://HOST:PORT`
    /// (behind a TLS terminator or another host name), e.g. `https://apps.example.com`.
    public var proxyURL: String?

    /// `--proxy-domain`, `CANOPY_PROXY_DOMAIN`: a wildcard domain whose names reach the proxy (`*.apps.example.com`
    /// in DNS): each instance port is then served at a host name of its own, `HEX-TASK-PORT.apps.example.com`, an
    /// origin of its own, and path-mode URLs are refused. Recommended wherever a wildcard DNS name can be had.
    public var proxyDomain: String?
    /// `--apps FILE`, `CANOPY_APPS`: a JSON file of the apps an admin configures (code-server, RStudio, ...), each
    /// `{"name", "command": [...], "port", "image"?, "tokenEnv"?, "tokenHeader"?, "description"?}`; they join the
    /// built-in `jupyter` (one of the same name replaces it).
    public var appsFile: String?

    /// `--ssh-port`, `CANOPY_SSH_PORT`: the port of Canopy's SSH server (users' `ssh ID@host` into their
    /// instances, by the keys they registered); nil or `off`: no SSH server. 0 picks a free port.
    public var sshPort: Int?

    /// The Data Forest dialect's settings (`CANOPY_DATAFOREST_*`).
    public var dataForest = DataForestConfiguration()
    /// The SCNet dialect's settings (`CANOPY_SCNET_*`).
    public var scnet = SCNetConfiguration()

    /// The default port.
    public static let defaultPort = 7420

    /// Defaults, overridden by the environment.
    public init(environment: [String: String] = ProcessInfo.processInfo.environment) {
        if let v = environment["CANOPY_DATA_DIR"], !v.isEmpty { dataDir = v }
        if let v = environment["CANOPY_HOST"], !v.isEmpty { host = v }
        if let v = environment["CANOPY_PORT"], let p = Int(v) { port = p }
        if let v = environment["CANOPY_GPUS"], !v.isEmpty { gpus = v }
        if let v = environment["CANOPY_CPUS"], !v.isEmpty { cpus = v }
        if let v = environment["CANOPY_MEMORY"], !v.isEmpty { memory = v }
        if let v = environment["CANOPY_TASK_USER"], !v.isEmpty { taskUser = v }
        if let v = environment["CANOPY_SLURM_TENANT_USERS"], !v.isEmpty { slurmTenantUsers = v.split(separator: ",").map { String($0) } }
        if let v = environment["CANOPY_TASK_UIDS"], !v.isEmpty { taskUIDs = v }
        if let v = environment["CANOPY_STOP_GRACE"], let g = Double(v) { stopGrace = g }
        if let v = environment["CANOPY_ADMIN_TOKEN"], !v.isEmpty { adminToken = v }
        if let v = environment["CANOPY_SHIM"], !v.isEmpty { shimPath = v }
        if let v = environment["CANOPY_CGROUP_ROOT"], !v.isEmpty { cgroupRoot = v }
        if let v = environment["CANOPY_EXECUTOR"], !v.isEmpty { executor = v }
        if let v = environment["CANOPY_SLURM_POLL_INTERVAL"], let d = Double(v) { slurmPollInterval = d }
        if let v = environment["CANOPY_SLURM_CONF"], !v.isEmpty { slurmConf = v }
        if let v = environment["CANOPY_IMAGE_POLICY"], !v.isEmpty { imagePolicy = v }
        if let v = environment["CANOPY_CONTAINER_ENGINE"], !v.isEmpty { containerEngine = v }
        if let v = environment["CANOPY_CONTAINER_NETWORK"], !v.isEmpty { containerNetwork = v }
        if let v = environment["CANOPY_PULL_REGISTRIES"], !v.isEmpty { pullRegistries = v.split(separator: ",").map { String($0) } }
        if let v = environment["CANOPY_HOST_MOUNTS"], !v.isEmpty { hostMounts = v.split(separator: ",").map { String($0) } }
        if let v = environment["CANOPY_PROXY_PORT"], !v.isEmpty { proxyPort = v == "off" ? -1 : Int(v) }
        if let v = environment["CANOPY_PROXY_URL"], !v.isEmpty { proxyURL = v }
        if let v = environment["CANOPY_APPS"], !v.isEmpty { appsFile = v }
        if let v = environment["CANOPY_PROXY_DOMAIN"], !v.isEmpty { proxyDomain = v }
        if let v = environment["CANOPY_SSH_PORT"], !v.isEmpty { sshPort = v == "off" ? nil : Int(v) }
        dataForest = DataForestConfiguration(environment: environment)
        scnet = SCNetConfiguration(environment: environment)
    }

    /// The proxy's port: nil when it is off.
    func resolvedProxyPort() throws -> Int? {
        switch proxyPort {
        case .some(let p) where p < 0: return nil
        case .some(let p):
            guard p <= 65535 else { throw CanopyError.invalid("proxy-port", "proxy-port must be from 0 to 65535, or off") }
            guard p == 0 || p != port else { throw CanopyError.invalid("proxy-port", "the proxy needs a port of its own, not the API's (\(port))") }
            return p
        case .none: return port == 0 ? 0 : port + 1
        }
    }

    /// The SSH server's port, checked: nil when it is off.
    func resolvedSSHPort() throws -> Int? {
        guard let p = sshPort, p >= 0 else { return nil }
        guard p <= 65535 else { throw CanopyError.invalid("ssh-port", "ssh-port must be from 0 to 65535, or off") }
        let proxy = try resolvedProxyPort() ?? -1
        guard p == 0 || (p != port && p != proxy) else {
            throw CanopyError.invalid("ssh-port", "the SSH server needs a port of its own, not the API's or the proxy's")
        }
        return p
    }

    /// The proxy's wildcard domain, checked: DNS labels of letters, digits and '-', lowercased.
    func checkedProxyDomain() throws -> String? {
        guard var d = proxyDomain?.lowercased() else { return nil }
        if d.hasPrefix("*.") { d.removeFirst(2) }
        let labels = d.split(separator: ".", omittingEmptySubsequences: false)
        guard d.utf8.count <= 190, labels.count >= 1,
            labels.allSatisfy({ l in
                (1...63).contains(l.utf8.count) && !l.hasPrefix("-") && !l.hasSuffix("-")
                    && l.allSatisfy { $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "-") }
            })
        else {
            throw CanopyError.invalid("proxy-domain", "proxy-domain must be a DNS name such as apps.example.com (whose *.apps.example.com reach the proxy)")
        }
        return d
    }

    /// The configured apps, read and checked.
    func loadedApps() throws -> [AppDefinition] {
        guard let appsFile else { return [] }
        guard let data = FileManager.default.contents(atPath: appsFile) else { throw CanopyError.invalid("apps", "cannot read \(appsFile)") }
        let apps: [AppDefinition]
        do { apps = try JSONDecoder().decode([AppDefinition].self, from: data) } catch {
            throw CanopyError.invalid("apps", "\(appsFile) is not a JSON array of apps ({\"name\", \"command\": [...], \"port\", ...}): \(error)")
        }
        for app in apps {
            guard Queue.isValidName(app.name) else { throw CanopyError.invalid("apps", "app name \"\(app.name)\": \(Queue.nameRule)") }
            guard !app.command.isEmpty, !app.command[0].isEmpty else { throw CanopyError.invalid("apps", "app \(app.name) has no command") }
            guard (1...65535).contains(app.port) else { throw CanopyError.invalid("apps", "app \(app.name): port must be from 1 to 65535") }
            if let v = app.tokenEnv, !WorkloadSpec.isValidEnvName(v) { throw CanopyError.invalid("apps", "app \(app.name): tokenEnv is not a variable name") }
            if let h = app.tokenHeader, app.header(token: "x") == nil || h.contains("\r") || h.contains("\n") {
                throw CanopyError.invalid("apps", "app \(app.name): tokenHeader must be \"Name: value with {token}\"")
            }
        }
        return apps
    }

    /// The proxy's public URL, checked.
    func checkedProxyURL() throws -> String? {
        guard let proxyURL else { return nil }
        guard let u = URLComponents(string: proxyURL), u.scheme == "http" || u.scheme == "https", u.host?.isEmpty == false, u.query == nil,
            u.path.isEmpty || u.path == "/"
        else {
            throw CanopyError.invalid("proxy-url", "proxy-url must be http(s)://HOST[:PORT], without a path, e.g. https://apps.example.com")
        }
        return proxyURL
    }

    /// The container engine's socket: the one configured (which need not answer yet: workloads wait for it), or
    /// the first default socket present; nil for none. With the Slurm backend the engine holds the image catalog,
    /// and the nodes run each image from its root file system, exported from the engine.
    func containerEngineSocket() throws -> String? {
        if let containerEngine {
            if containerEngine == "none" { return nil }
            return try DockerEngine.socketPath(fromURL: containerEngine)
        }
        return DockerEngine.defaultSockets.first { FileManager.default.fileExists(atPath: $0) }
    }

    /// The container network, checked.
    func checkedContainerNetwork() throws -> String? {
        guard let net = containerNetwork else { return nil }
        guard !net.isEmpty, net.utf8.count <= 128, net.allSatisfy({ $0.isLetter || $0.isNumber || "-_.".contains($0) }) else {
            throw CanopyError.invalid("container-network", "\"\(net)\" is not a network name (none, bridge, host or an engine network)")
        }
        return net
    }

    /// The image policy in force: the one asked for, else `engine` with an engine and `refuse` without.
    func resolvedImagePolicy(hasEngine: Bool) throws -> ImagePolicy {
        guard let imagePolicy else { return hasEngine ? .engine : .refuse }
        guard let policy = ImagePolicy(rawValue: imagePolicy) else {
            throw CanopyError.invalid("image-policy", "unknown image policy \"\(imagePolicy)\"; use \(ImagePolicy.choices)")
        }
        return policy
    }

    /// The tenant-to-account map for Slurm jobs, from `TENANT=USER` entries.
    func checkedSlurmTenantUsers() throws -> [String: String] {
        var map: [String: String] = [:]
        for entry in slurmTenantUsers {
            let parts = entry.split(separator: "=", maxSplits: 1).map(String.init)
            guard parts.count == 2, !parts[0].isEmpty, !parts[1].isEmpty else {
                throw CanopyError.invalid("slurm-tenant-user", "\"\(entry)\" is not TENANT=USER")
            }
            guard map[parts[0]] == nil else { throw CanopyError.invalid("slurm-tenant-user", "tenant \(parts[0]) is mapped twice") }
            map[parts[0]] = parts[1]
        }
        return map
    }

    /// The host mount allow-list, each entry an absolute path without "..".
    func checkedHostMounts() throws -> [String] {
        try hostMounts.map { entry in
            guard entry.hasPrefix("/"), !entry.split(separator: "/").contains(".."), let path = DataPath.normalize(entry) else {
                throw CanopyError.invalid("host-mount", "\"\(entry)\" is not an absolute host path without \"..\"")
            }
            return path
        }
    }

    /// The runtimes this configuration asks for: the Slurm backend, or the process runtime and those `alongside`
    /// makes (a container runtime), all on this host's one inventory.
    func makeRuntimes(logger: Logger, alongside: (HostInventory) throws -> [any PlacedRuntime] = { _ in [] }) throws -> Runtimes {
        switch executor {
        case "local":
            let configuration = try executorConfiguration()
            let inventory = HostInventory(
                nodeName: configuration.nodeName, declaredGPUs: configuration.declaredGPUs, cpuMillis: configuration.cpuMillis,
                memoryMiB: configuration.memoryMiB)
            let process = try LocalExecutor(configuration: configuration, inventory: inventory, logger: logger)
            return Runtimes(inventory: inventory, placed: [process] + (try alongside(inventory)))
        case "slurm":
            guard slurmPollInterval >= 0.05, slurmPollInterval <= 3600 else {
                throw CanopyError.invalid("slurm-poll-interval", "the poll interval must be between 0.05 and 3600 seconds")
            }
            var environment = ProcessInfo.processInfo.environment
            if let slurmConf {
                guard FileManager.default.fileExists(atPath: slurmConf) else { throw CanopyError.invalid("slurm-conf", "\(slurmConf) does not exist") }
                environment["SLURM_CONF"] = slurmConf
            }
            return Runtimes(
                backend: try SlurmExecutor(
                    configuration: SlurmExecutor.Configuration(
                        workloadsRoot: absoluteDataDir + "/workloads", pollInterval: slurmPollInterval, taskUser: taskUser,
                        tenantUsers: try checkedSlurmTenantUsers(), environment: environment),
                    logger: logger))
        default:
            throw CanopyError.invalid("executor", "unknown executor \"\(executor)\"; use local or slurm")
        }
    }

    /// The data directory as an absolute path.
    public var absoluteDataDir: String {
        dataDir.hasPrefix("/") ? dataDir : FileManager.default.currentDirectoryPath + "/" + dataDir
    }

    /// The local executor's configuration, validated.
    func executorConfiguration() throws -> LocalExecutor.Configuration {
        let declared = try gpus.map(GPUDiscovery.parseDeclared)
        var cpuMillis: Int?
        if let cpus {
            guard let v = Quantity.parseCPU(cpus), v > 0 else { throw CanopyError.invalid("cpus", "\"\(cpus)\" is not a number of CPUs") }
            cpuMillis = v
        }
        var memoryMiB: Int?
        if let memory {
            guard let v = Quantity.parseMemory(memory), v > 0 else { throw CanopyError.invalid("memory", "\"\(memory)\" is not a size such as 8Gi") }
            memoryMiB = v
        }
        return LocalExecutor.Configuration(
            workloadsRoot: absoluteDataDir + "/workloads", shimPath: shimPath ?? Self.defaultShimPath(), declaredGPUs: declared, cpuMillis: cpuMillis,
            memoryMiB: memoryMiB, taskUIDs: try TaskIdentities.parseRange(taskUIDs), cgroupRoot: cgroupRoot)
    }

    /// canopy-shim next to the running executable (SwiftPM builds both into the same folder).
    public static func defaultShimPath() -> String {
        let exe = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
        return (exe as NSString).deletingLastPathComponent + "/canopy-shim"
    }
}
