package dev.karst.compat.spring;

import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.springframework.boot.SpringApplication;
import org.springframework.boot.autoconfigure.SpringBootApplication;
import org.springframework.kafka.annotation.KafkaListener;
import org.springframework.messaging.handler.annotation.SendTo;

/**
 * A Spring Boot application with one {@code @KafkaListener}, as users write it: Boot's
 * auto-configured consumer factory, listener container (a consumer group, offsets committed by
 * the container after each batch of records) and KafkaTemplate, which answers every record on
 * a reply topic through {@code @SendTo}.
 *
 * <p>Every record received is printed as one line, {@code received PARTITION OFFSET KEY VALUE},
 * so the test that runs it can check that each record arrived exactly once. Settings come
 * from {@code application.properties} and the command line ({@code --spring.kafka.bootstrap-servers},
 * {@code --karst.topic}, {@code --karst.reply-topic}, {@code --karst.group}); SIGTERM stops the
 * containers (committing what they processed) and closes the context.
 */
@SpringBootApplication
public class ListenerApplication {
    public static void main(String[] args) {
        SpringApplication.run(ListenerApplication.class, args);
    }

    @KafkaListener(topics = "${karst.topic}", groupId = "${karst.group}")
    @SendTo("${karst.reply-topic}")
    public String listen(ConsumerRecord<String, String> record) {
        System.out.println("received " + record.partition() + " " + record.offset() + " " + record.key() + " "
                + record.value());
        System.out.flush();
        return record.value().toUpperCase(java.util.Locale.ROOT);
    }
}
