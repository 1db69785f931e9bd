import CanopyCore
import Crypto
import Foundation

/// The applications workloads run by name: the built-in `jupyter`, and those an admin configures. Each app
/// workload gets a secret of its own, derived from the server's key (`app.key` in the data directory), handed to
/// the app at launch only (never stored with the workload, never shown by the API), and presented to it by the
/// proxy on the user's behalf.
public final class AppService: Sendable {
    private let apps: [String: AppDefinition]
    private let keyBytes: Data
    /// Whether instances are served at host names of their own (`{base_url}` is then `/`).
    private let hostMode: Bool

    /// Reads (or creates) the key in `keyFile`; `configured` adds to or replaces the built-in apps by name.
    public init(keyFile: String, configured: [AppDefinition] = [], hostMode: Bool = false) throws {
        self.hostMode = hostMode
        keyBytes = try AccessKeyService.loadOrCreateKey(keyFile).withUnsafeBytes { Data($0) }
        var apps = [AppDefinition.jupyter.name: AppDefinition.jupyter]
        for app in configured { apps[app.name] = app }
        self.apps = apps
    }

    /// The apps, by name.
    public var all: [AppDefinition] { apps.values.sorted { $0.name < $1.name } }

    /// An app by name, or a 400 naming those there are.
    public func definition(_ name: String, field: String = "app") throws -> AppDefinition {
        guard let app = apps[name] else {
            throw CanopyError.invalid(field, "app \"\(name)\" is not configured here; apps: \(apps.keys.sorted().joined(separator: ", "))")
        }
        return app
    }

    /// The app secret of a workload: HMAC-SHA256 of its id under the server's key, hex.
    public func token(workloadID: String) -> String {
        let mac = HMAC<SHA256>.authenticationCode(for: Data("canopy-app-token\u{0}\(workloadID)".utf8), using: SymmetricKey(data: keyBytes))
        return Hex.encode(mac)
    }

    /// A launch of an app workload's task: the command's placeholders expanded for the task, the secret in the
    /// app's variable. Launches of other workloads are left as they are.
    public func prepare(_ launch: inout TaskLaunch) {
        guard let name = launch.spec.app, let app = apps[name] else { return }
        // The app's port is the workload's first (chosen at submit).
        let port = launch.spec.ports.first?.port ?? app.port
        // The app's command, alone or after a wrapper of the dialect's (a start script that ends in `exec "$@"`).
        if launch.spec.command.count >= app.command.count, launch.spec.command.suffix(app.command.count).elementsEqual(app.command) {
            launch.spec.command =
                launch.spec.command.dropLast(app.command.count)
                + app.command(workload: launch.workloadID, task: launch.taskIndex, port: port, baseURL: hostMode ? "/" : nil)
        }
        if let variable = app.tokenEnv { launch.secretEnv[variable] = token(workloadID: launch.workloadID) }
    }

    /// A submission of an app workload to a backend that schedules for itself: each task binds a port its node
    /// has free, so the command keeps `{port}` and `{task}` for the task to fill in there (the base URL names
    /// the declared port, which the proxy maps); the secret goes in the app's variable. Others are left alone.
    public func prepare(_ submission: inout WorkloadSubmission) {
        guard let name = submission.spec.app, let app = apps[name] else { return }
        let port = submission.spec.ports.first?.port ?? app.port
        if submission.spec.command.count >= app.command.count, submission.spec.command.suffix(app.command.count).elementsEqual(app.command) {
            let base = hostMode ? "/" : "/proxy/\(submission.workloadID)/{task}/\(port)/"
            submission.spec.command =
                submission.spec.command.dropLast(app.command.count)
                + app.command(filling: [("base_url", base), ("workload", submission.workloadID)])
            submission.taskPlaceholders = true
        }
        if let variable = app.tokenEnv { submission.secretEnv[variable] = token(workloadID: submission.workloadID) }
    }

    /// The path task `task`'s port `port` is served under: `/proxy/ID/TASK/PORT/`, or `/` in host mode.
    public func basePath(workloadID: String, task: Int, port: Int) -> String {
        hostMode ? "/" : EndpointService.path(workloadID: workloadID, task: task, port: port)
    }

    /// The header the proxy sends on requests to `port` of an app workload, if its app takes one there.
    public func header(for w: Workload, port: Int) -> (name: String, value: String)? {
        guard let name = w.spec.app, let app = apps[name], w.spec.ports.first?.port == port else { return nil }
        return app.header(token: token(workloadID: w.id))
    }
}
