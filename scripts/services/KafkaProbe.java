// Answers whether a Kafka broker serves metadata: exit 0 when a metadata
// request (describeCluster) succeeds. Run by scripts/services.sh with the
// Kafka classpath: java -cp CP KafkaProbe.java HOST:PORT
import java.util.Properties;
import java.util.concurrent.TimeUnit;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;

public class KafkaProbe {
    public static void main(String[] args) throws Exception {
        Properties props = new Properties();
        props.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, args[0]);
        props.put(AdminClientConfig.REQUEST_TIMEOUT_MS_CONFIG, "3000");
        props.put(AdminClientConfig.DEFAULT_API_TIMEOUT_MS_CONFIG, "4000");
        try (Admin admin = Admin.create(props)) {
            int nodes = admin.describeCluster().nodes().get(5, TimeUnit.SECONDS).size();
            System.out.println("kafka: " + nodes + " broker(s) answer metadata requests");
        }
    }
}
