// Runs one OpenSearch node from the Maven Central jars. OpenSearch ships no
// launcher there; like its own test framework's MockNode, this subclasses
// Node and passes the HTTP transport module (Netty4Plugin) as a classpath
// plugin. Settings come from system properties set by scripts/services.sh:
//   -Dfraudflight.home=DIR  (data, logs)   -Dfraudflight.http.port=9200
// The security plugin is not on the classpath: HTTP is plain, on loopback.
import java.nio.file.Path;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CountDownLatch;
import org.opensearch.common.settings.Settings;
import org.opensearch.node.InternalSettingsPreparer;
import org.opensearch.node.Node;
import org.opensearch.transport.Netty4Plugin;

public class OpenSearchNode extends Node {
    OpenSearchNode(Settings settings, Path config) {
        super(InternalSettingsPreparer.prepareEnvironment(settings, Map.of(), config, () -> "fraudflight"),
              List.of(Netty4Plugin.class), false);
    }

    public static void main(String[] args) throws Exception {
        Path home = Path.of(System.getProperty("fraudflight.home")).toAbsolutePath();
        Settings settings = Settings.builder()
            .put("path.home", home.toString())
            .put("path.data", home.resolve("data").toString())
            .put("path.logs", home.resolve("logs").toString())
            .put("cluster.name", "fraudflight")
            .put("node.name", "fraudflight-1")
            .put("discovery.type", "single-node")
            .put("network.host", "127.0.0.1")
            .put("http.port", System.getProperty("fraudflight.http.port", "9200"))
            .put("transport.port", System.getProperty("fraudflight.transport.port", "9300"))
            .put("http.type", "netty4")
            .put("transport.type", "netty4")
            // A small test machine: no disk-watermark surprises, no ML.
            .put("cluster.routing.allocation.disk.threshold_enabled", false)
            .put("action.auto_create_index", true)
            .build();
        Node node = new OpenSearchNode(settings, home.resolve("config"));
        CountDownLatch stopped = new CountDownLatch(1);
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            try { node.close(); } catch (Exception e) { e.printStackTrace(); }
            stopped.countDown();
        }));
        node.start();
        System.out.println("opensearch: node started on 127.0.0.1:" + settings.get("http.port"));
        stopped.await();
    }
}
