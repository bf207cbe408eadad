CREATE USER 'logtide'@'%' IDENTIFIED WITH caching_sha2_password BY 'logtide-my';
GRANT REPLICATION SLAVE, REPLICATION CLIENT, SELECT ON *.* TO 'logtide'@'%';
CREATE TABLE shop.products (id int AUTO_INCREMENT PRIMARY KEY, name varchar(100), price decimal(10,2));
INSERT INTO shop.products (name, price) VALUES ('kettle', 24.90);
