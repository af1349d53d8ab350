// Creates (or updates) the SCRAM-SHA-256 and SCRAM-SHA-512 credentials of a
// Kafka user through the Admin API, for the local broker's SASL_PLAINTEXT
// listener (127.0.0.1:9094). Idempotent: an upsert. Run by
// scripts/services.sh with the Kafka classpath:
//   java -cp CP KafkaScram.java HOST:PORT USER PASSWORD
import java.util.List;
import java.util.Properties;
import java.util.concurrent.TimeUnit;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.admin.ScramCredentialInfo;
import org.apache.kafka.clients.admin.ScramMechanism;
import org.apache.kafka.clients.admin.UserScramCredentialUpsertion;

public class KafkaScram {
    public static void main(String[] args) throws Exception {
        Properties props = new Properties();
        props.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, args[0]);
        props.put(AdminClientConfig.REQUEST_TIMEOUT_MS_CONFIG, "10000");
        props.put(AdminClientConfig.DEFAULT_API_TIMEOUT_MS_CONFIG, "15000");
        try (Admin admin = Admin.create(props)) {
            // One mechanism per request: the broker refuses two changes of one user in one request.
            for (ScramMechanism mechanism : List.of(ScramMechanism.SCRAM_SHA_256, ScramMechanism.SCRAM_SHA_512)) {
                admin.alterUserScramCredentials(List.of(
                    new UserScramCredentialUpsertion(args[1], new ScramCredentialInfo(mechanism, 4096), args[2])
                )).all().get(15, TimeUnit.SECONDS);
            }
            System.out.println("kafka: SCRAM credentials of " + args[1] + " in place");
        }
    }
}
