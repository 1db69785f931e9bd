/// What a server does with a workload that names an image.
public enum ImagePolicy: String, Sendable, Hashable, CaseIterable {
    /// Resolve the image in the catalog and run the workload's tasks as containers of the engine.
    case engine
    /// Ignore the image and run the tasks as processes on the host, as a server without containers always did (an
    /// admin's choice, for servers whose users' images match the host; mounts are then refused).
    case runAsProcesses = "processes"
    /// Refuse workloads that name an image: the server has no container engine.
    case refuse

    /// How `canopy serve --image-policy` spells the choices.
    public static let choices = allCases.map(\.rawValue).joined(separator: ", ")

    /// The answer to a workload with an image on a server that has no container engine.
    public static let noEngineMessage =
        "this server has no container engine, so it cannot run images; an admin starts it with "
        + "canopy serve --container-engine unix:///var/run/docker.sock (or --image-policy processes to run image workloads as host processes)"
}
