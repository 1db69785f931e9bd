import Foundation

/// An application a workload can run by name (`"app": "jupyter"`, `canopy run --app NAME`, `canopy jupyter`):
/// the command to start it, the HTTP port it serves, and how Canopy's proxy authenticates to it, so that the app
/// keeps its own authentication on (other tasks on the host cannot use it) while users only ever present their
/// Canopy credentials.
public struct AppDefinition: Sendable, Hashable, Codable {
    /// Its name.
    public var name: String
    /// The command, with placeholders expanded for each task at launch: `{port}`, `{base_url}` (the task's path on
    /// the proxy, `/proxy/ID/TASK/PORT/`), `{workload}`, `{task}`.
    public var command: [String]
    /// The HTTP port it serves.
    public var port: Int
    /// The image it runs in when the workload names none (nil: as a process on the host).
    public var image: String?
    /// The environment variable that hands the app its per-workload secret (Jupyter: `JUPYTER_TOKEN`); nil for none.
    public var tokenEnv: String?
    /// The header the proxy sends the app on every request, `{token}` replaced by that secret (Jupyter:
    /// `Authorization: token {token}`); nil for none.
    public var tokenHeader: String?
    /// What it is, for `canopy apps`.
    public var description: String
    /// A path under the app's base URL that answers as Jupyter's kernels API does (a JSON array of objects with an
    /// `execution_state`): any kernel `busy` counts as activity for idle stop, so a cell that sleeps or waits on
    /// I/O keeps its instance up. Nil for apps without one.
    public var activityPath: String?

    /// Creates one.
    public init(
        name: String, command: [String], port: Int, image: String? = nil, tokenEnv: String? = nil, tokenHeader: String? = nil, description: String = "",
        activityPath: String? = nil
    ) {
        self.activityPath = activityPath
        self.name = name
        self.command = command
        self.port = port
        self.image = image
        self.tokenEnv = tokenEnv
        self.tokenHeader = tokenHeader
        self.description = description
    }

    /// JupyterLab, with its base URL set to the proxy path and its token from `JUPYTER_TOKEN`, which the proxy
    /// presents for the user; it listens on loopback only.
    public static let jupyter = AppDefinition(
        name: "jupyter",
        command: [
            "jupyter", "lab", "--no-browser", "--ip=127.0.0.1", "--port={port}", "--ServerApp.port_retries=0", "--ServerApp.base_url={base_url}",
            "--ServerApp.allow_remote_access=True", "--ServerApp.trust_xheaders=True",
        ],
        port: 8888, tokenEnv: "JUPYTER_TOKEN", tokenHeader: "Authorization: token {token}",
        description: "JupyterLab (jupyter lab from the image, or from the host's PATH for processes)", activityPath: "api/kernels")

    /// The command for task `task` of workload `workload`; `baseURL` replaces the path-mode `/proxy/ID/TASK/PORT/`.
    public func command(workload: String, task: Int, port: Int, baseURL: String? = nil) -> [String] {
        command(filling: [
            ("port", String(port)), ("base_url", baseURL ?? "/proxy/\(workload)/\(task)/\(port)/"), ("workload", workload), ("task", String(task)),
        ])
    }

    /// The command with the placeholders named in `values` (`"port"` for `{port}`) filled in, in that order; others
    /// are left for later (a backend's task fills `{port}` and `{task}` on its node).
    public func command(filling values: [(String, String)]) -> [String] {
        command.map { word in values.reduce(word) { $0.replacingOccurrences(of: "{\($1.0)}", with: $1.1) } }
    }

    /// The header to send the app, split into name and value, for a secret.
    public func header(token: String) -> (name: String, value: String)? {
        guard let tokenHeader, let colon = tokenHeader.firstIndex(of: ":") else { return nil }
        let name = tokenHeader[..<colon].trimmingCharacters(in: .whitespaces)
        let value = tokenHeader[tokenHeader.index(after: colon)...].trimmingCharacters(in: .whitespaces).replacingOccurrences(of: "{token}", with: token)
        return (name, value)
    }
}
